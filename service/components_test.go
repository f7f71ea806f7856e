package service

import (
	"context"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/phases"
)

// bindingService records its Bind calls and what the instance was doing
// then.
type bindingService struct {
	testService
	mu          sync.Mutex
	binds       []*Instance
	boundIn     phases.State // the instance's state at Bind
	callsAtBind int          // the phase methods called before Bind
}

func newBindingService() *bindingService {
	return &bindingService{testService: *newTestService()}
}

func (s *bindingService) Bind(in *Instance) {
	s.testService.mu.Lock()
	calls := len(s.calls)
	s.testService.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.binds = append(s.binds, in)
	s.boundIn = in.State()
	s.callsAtBind = calls
}

func (s *bindingService) bound() []*Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Instance(nil), s.binds...)
}

func TestNewBindsTheServiceOnceBeforeAnyPhase(t *testing.T) {
	f := newFixture(t)
	svc := newBindingService()
	in, err := New(svc, f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	if b := svc.bound(); len(b) != 1 || b[0] != in {
		t.Fatalf("after New: %d Bind calls (%v), want one, with the instance New returned (%p)", len(b), b, in)
	}
	if svc.boundIn != phases.Init || svc.callsAtBind != 0 {
		t.Errorf("Bind in state %s after %d phase methods, want init and none", svc.boundIn, svc.callsAtBind)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if n := len(svc.bound()); n != 1 {
		t.Errorf("%d Bind calls after a whole run, want 1", n)
	}
	if !svc.called("OnStart") || !svc.called("OnStop") {
		t.Error("the bound service did not run its phases")
	}
}

func TestANewThatFailsBindsNothing(t *testing.T) {
	f := newFixture(t)
	svc := newBindingService()
	if _, err := New(svc, f.options(WithServiceName("Not A Name"))...); err == nil {
		t.Fatal("New accepted a bad service name")
	}
	if n := len(svc.bound()); n != 0 {
		t.Errorf("%d Bind calls from a New that failed, want 0", n)
	}
}

func TestRedisIsTheInstancesClientAndNilWithoutOne(t *testing.T) {
	f := newFixture(t)
	in, err := New(newTestService(), f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	if in.Redis() != redis.UniversalClient(f.client) {
		t.Errorf("Redis() = %v, want the client given with WithRedis", in.Redis())
	}
	// Everything but WithRedis.
	var opts []Option
	for _, o := range f.options() {
		var c config
		o.apply(&c)
		if c.redis == nil {
			opts = append(opts, o)
		}
	}
	bare, err := New(newTestService(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if bare.Redis() != nil {
		t.Errorf("Redis() without a client = %v, want nil", bare.Redis())
	}
}
