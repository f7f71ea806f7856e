package fleettest

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial to a killed master on its own logger:
	// the instances' logs say what matters.
	redis.SetLogger(quiet{})
	goleak.VerifyTestMain(settled{m})
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// settled runs the tests, then gives go-redis's redial goroutines the second
// they need to exit: a pool that failed to dial a killed master redials on a
// goroutine that sleeps 1s between attempts and sees its client closed only
// when it wakes, later than goleak stops looking.
type settled struct{ m *testing.M }

func (s settled) Run() int {
	code := s.m.Run()
	deadline := time.Now().Add(5 * time.Second)
	for redialing() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling interval, bounded by the deadline
	}
	return code
}

func redialing() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "ConnPool).tryDial")
}
