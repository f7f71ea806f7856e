package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// Two instances with one instance id, as two processes started with the same
// SG_INSTANCE_ID: the newer takes the entry over, the older finds out at its
// next heartbeat and warns on /healthz; stopping the older one leaves the
// newer one's entry in place.
func TestOlderInstanceWithTheSameIDWarnsOnHealthzAndKeepsTheOthersEntry(t *testing.T) {
	f := newFixture(t)
	olderLogs := &safeBuffer{}
	older, olderDone := f.run(t, newTestService(), WithLogger(olderLogs.logger()))

	newerLogs := &safeBuffer{}
	newer, newerDone := f.run(t, newTestService(), WithLogger(newerLogs.logger()))
	reg := registry.New(f.client)
	ctx := context.Background()
	owner := memberOf(newer).Owner()
	if e, err := reg.Entry(ctx, "svc", "i-1"); err != nil || e.Owner != owner {
		t.Fatalf("entry %+v, %v: want the newer instance's (owner %s)", e, err, owner)
	}

	// The older instance's next heartbeat is a compare-and-set: it loses.
	deadline := time.Now().Add(10 * time.Second)
	for memberOf(older).Conflict() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the older instance never saw the other owner")
		}
		f.clock.Advance(time.Second)
		time.Sleep(time.Millisecond)
	}
	// Refresh skips a check that a background round is still running, and
	// that round may have started before the conflict: poll until a round
	// that began after it has reported.
	var body health.Response
	warned := func() bool {
		older.health.Refresh(ctx)
		body = health.Response{}
		if err := json.Unmarshal([]byte(httpGet(t, older, "/healthz")), &body); err != nil {
			t.Fatal(err)
		}
		c := body.Checks[IdentityCheck]
		return body.Status == health.StatusWarn && len(c) == 1 && c[0].Status == health.StatusWarn &&
			strings.Contains(c[0].Output, "owned by another process")
	}
	for deadline := time.Now().Add(5 * time.Second); !warned(); {
		if time.Now().After(deadline) {
			t.Fatalf("/healthz = %+v, want status warn with %s warn naming the other process", body, IdentityCheck)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(olderLogs.String(), "another process took this instance's entry over") {
		t.Errorf("the older instance did not log the conflict:\n%s", olderLogs.String())
	}
	newer.health.Refresh(ctx)
	if got := httpGet(t, newer, "/healthz"); strings.Contains(got, "owned by another process") {
		t.Errorf("the newer instance warns too:\n%s", got)
	}
	if strings.Contains(newerLogs.String(), "level=ERROR") {
		t.Errorf("the newer instance logged an error:\n%s", newerLogs.String())
	}

	_ = older.Shutdown(ctx)
	if err := wait(t, olderDone); err != nil {
		t.Fatal(err)
	}
	if e, err := reg.Entry(ctx, "svc", "i-1"); err != nil || e.Owner != owner || e.Status != string(phases.Running) {
		t.Fatalf("after the older instance stopped: entry %+v, %v; want the newer one's, running", e, err)
	}
	_ = newer.Shutdown(ctx)
	if err := wait(t, newerDone); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Entry(ctx, "svc", "i-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("after the newer instance stopped: %v, want its entry removed", err)
	}
}

// safeBuffer is a log sink that tests may read while instances write.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *safeBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(s, nil)) }
