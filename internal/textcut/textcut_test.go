package textcut_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/textcut"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBytesCutsAtACharacterBoundaryWithinTheLimit(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijkl", 10, "abcdefg…"},
		{strings.Repeat("é", 10), 10, "ééé…"}, // two bytes each: 7 bytes before the ellipsis hold 3 whole ones
	} {
		got := textcut.Bytes(tc.s, tc.n)
		if len(got) > tc.n || !utf8.ValidString(got) {
			t.Errorf("Bytes(%q, %d) = %q: %d bytes, valid %v", tc.s, tc.n, got, len(got), utf8.ValidString(got))
		}
		if got != tc.want {
			t.Errorf("Bytes(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}
