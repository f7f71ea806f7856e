package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/process"
)

// Either component failing fails the instance and ends the other: the
// worker failing (its consumer group destroyed under it) stops the API and
// the process exits 1.
func TestAWorkerFailureFailsTheInstanceAndStopsTheAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server")
	}
	srv := redistest.Server(t)
	admin := srv.Client(t)
	p := start(t, "REDIS_URL="+srv.URL())
	p.WaitFor(t, takingNew)
	waitBlocked(t, admin)
	// Redis unblocks the read with a NOGROUP error.
	if err := admin.XGroupDestroy(context.Background(), streamKey, group).Err(); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	out := p.Output()
	for _, want := range []string{
		`msg="instance failed" service=orders instance=o-1 state=failed error="Service.Run: worker: reading ` + streamKey + ` as o-1 of group workers: NOGROUP`,
		apiStopped,
		"to=failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	// The API stopped inside Run, before the shutdown steps.
	if i, j := strings.Index(out, apiStopped), strings.Index(out, "to=stopping_daemons"); i < 0 || j < 0 || i > j {
		t.Errorf("the API stopped at byte %d, the shutdown steps began at %d: want the API first", i, j)
	}
}

// failingListener is a loopback listener that fails for good when told to,
// as a listener whose socket broke would.
type failingListener struct {
	net.Listener
	failed atomic.Bool
}

var errAcceptFailed = errors.New("accept failed on purpose")

func (l *failingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && l.failed.Load() {
		return nil, errAcceptFailed
	}
	return c, err
}

// fail makes the Accept in progress, and every later one, return
// errAcceptFailed.
func (l *failingListener) fail() {
	l.failed.Store(true)
	_ = l.Listener.Close()
}

// The API failing stops the worker, whose read was blocked for 30s, at
// once, and fails the instance: Main's exit code is 1. In process, through
// process.Config.Run, to give the API a listener that fails.
func TestAnAPIFailureFailsTheInstanceAndStopsTheBlockedWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server")
	}
	srv := redistest.Server(t)
	admin := srv.Client(t)
	// No OTEL_* variable: nothing is exported. (Main's OpenTelemetry set-up
	// reads the exporters' settings from the process's environment, not
	// through Config.Getenv.)
	env := map[string]string{"REDIS_URL": srv.URL(), "SG_INSTANCE_ID": "o-1", "SG_HEALTH_PORT": "0", "SG_BOOT_JITTER": "0"}
	const block = 30 * time.Second
	s, err := parseSettings(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	s.httpAddr, s.block = "127.0.0.1:0", block
	svc := newOrders(s)
	ln := &failingListener{}
	svc.listen = func(ctx context.Context, addr string) (net.Listener, error) {
		l, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
		ln.Listener = l
		return ln, err
	}
	var out lockedBuffer
	codec := make(chan int, 1)
	go func() {
		codec <- process.Config{Getenv: func(k string) string { return env[k] }, Stderr: &out}.Run(context.Background(), svc, options()...)
	}()
	waitBlocked(t, admin)

	began := time.Now()
	ln.fail()
	var code int
	select {
	case code = <-codec:
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not return within 20s of the API's failure:\n%s", out.String())
	}
	took := time.Since(began)
	t.Logf("the API failed with the worker blocked in XREADGROUP BLOCK %v: Run returned %v later", block, took)
	if code != process.ExitFailed {
		t.Errorf("exit code %d, want %d", code, process.ExitFailed)
	}
	// Bounded well below the BLOCK; the bound leaves a busy machine room.
	if took > 5*time.Second {
		t.Errorf("Run returned %v after the API failed, want < 5s: the worker's blocked read held it", took)
	}
	log := out.String()
	for _, want := range []string{
		`msg="worker: stopped taking orders" service=orders instance=o-1`,
		`error="Service.Run: HTTP API on ` + ln.Addr().String() + `: ` + errAcceptFailed.Error(),
		"to=failed",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
	checkEveryLineNamesTheInstance(t, log)
}
