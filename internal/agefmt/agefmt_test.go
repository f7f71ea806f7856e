package agefmt_test

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/agefmt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFormatUsesTheTwoLargestUnits(t *testing.T) {
	for d, want := range map[time.Duration]string{
		850 * time.Millisecond:                "850ms",
		42 * time.Second:                      "42s",
		5*time.Minute + 3*time.Second:         "5m3s",
		3*time.Hour + 12*time.Minute + 9:      "3h12m",
		50*time.Hour + 59*time.Minute:         "2d2h",
		2*time.Second + 999*time.Millisecond:  "2s",
		59*time.Minute + 59*time.Second + 1e8: "59m59s",
		24*time.Hour - time.Nanosecond:        "23h59m",
		0:                                     "0ms",
	} {
		if got := agefmt.Format(d); got != want {
			t.Errorf("Format(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestFormatShowsANegativeDurationAsZero(t *testing.T) {
	for _, d := range []time.Duration{-time.Nanosecond, -500 * time.Millisecond, -3 * time.Hour} {
		if got := agefmt.Format(d); got != "0ms" {
			t.Errorf("Format(%v) = %q, want 0ms (a clock behind the other's is no age)", d, got)
		}
	}
}

func ExampleFormat() {
	fmt.Println(agefmt.Format(5*time.Minute + 3*time.Second + 400*time.Millisecond))
	fmt.Println(agefmt.Format(50 * time.Hour))
	// Output:
	// 5m3s
	// 2d2h
}
