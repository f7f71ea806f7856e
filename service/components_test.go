package service

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/phases"
)

// bindingService records its Bind calls, what the instance was doing then,
// and, in Run, whether Leaving had ended by the time Run's context did.
type bindingService struct {
	testService
	mu          sync.Mutex
	binds       []*Instance
	boundIn     phases.State  // the instance's state at Bind
	callsAtBind int           // the phase methods called before Bind
	running     chan struct{} // closed as Run begins
	leftFirst   chan bool     // Run: Leaving had ended when Run's context ended
}

func newBindingService() *bindingService {
	return &bindingService{testService: *newTestService(), running: make(chan struct{}), leftFirst: make(chan bool, 1)}
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

func (s *bindingService) Run(ctx context.Context) error {
	s.mu.Lock()
	in := s.binds[0]
	s.mu.Unlock()
	if s.runErr != nil {
		return s.runErr
	}
	close(s.running)
	<-ctx.Done()
	s.leftFirst <- in.Leaving().Err() != nil
	return nil
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
	if c := bare.BlockingRedis(t.Context()); c != nil {
		t.Errorf("BlockingRedis() without a client = %v, want nil", c)
	}
}

// leavingCase drives an instance from running (or a boot phase) to the
// point where it begins to leave.
type leavingCase struct {
	name   string
	opts   []Option
	block  phases.State // a boot phase to stop in; "" for running
	runErr error        // what Service.Run returns at once
	leave  func(t *testing.T, f *fixture, in *Instance)
	cause  string // in context.Cause's message
}

func TestLeavingEndsTheMomentTheInstanceBeginsToLeave(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []leavingCase{
		{name: "RequestStop", leave: func(_ *testing.T, _ *fixture, in *Instance) { in.RequestStop() }, cause: "stop"},
		{name: "RequestRestart", leave: func(t *testing.T, _ *fixture, in *Instance) {
			if err := in.RequestRestart(); err != nil {
				t.Fatal(err)
			}
		}, cause: "restart"},
		{name: "Shutdown", leave: func(_ *testing.T, _ *fixture, in *Instance) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // asks for the stop, and returns without waiting
			_ = in.Shutdown(ctx)
		}, cause: "stop"},
		{name: "stop during a boot phase", block: phases.LoadingModules,
			leave: func(_ *testing.T, _ *fixture, in *Instance) { in.RequestStop() }, cause: "stop"},
		{name: "a failing boot phase", block: phases.LoadingModules, cause: "failed",
			leave: func(_ *testing.T, _ *fixture, in *Instance) {}},
		{name: "Run failing", runErr: boom, cause: "boom", leave: func(*testing.T, *fixture, *Instance) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			svc := newBindingService()
			svc.runErr = tc.runErr
			if tc.name == "a failing boot phase" {
				svc.failIn = tc.block
			} else {
				svc.blockIn = tc.block
			}
			in, err := New(svc, f.options(tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			if err := in.Leaving().Err(); err != nil {
				t.Fatalf("Leaving ended after New: %v", err)
			}
			done := startRun(t, in)
			switch {
			case svc.failIn != "" || tc.runErr != nil:
				// The failure itself is what makes it leave.
				<-in.Done()
			case tc.block != "":
				<-svc.blocked
			default:
				<-svc.running // a restart needs Run under way, not only the state
			}
			if svc.failIn == "" && tc.runErr == nil {
				if err := in.Leaving().Err(); err != nil {
					t.Fatalf("Leaving ended before anything asked the instance to leave (state %s): %v", in.State(), err)
				}
				tc.leave(t, f, in)
				// At the request, not at some later step: before the call
				// returned.
				if in.Leaving().Err() == nil {
					t.Fatalf("Leaving still going on after %s returned", tc.name)
				}
			}
			cause := context.Cause(in.Leaving())
			if cause == nil || !strings.Contains(cause.Error(), tc.cause) {
				t.Errorf("context.Cause = %v, want it to say %q", cause, tc.cause)
			}
			if tc.runErr != nil && !errors.Is(cause, tc.runErr) {
				t.Errorf("context.Cause = %v, want it to wrap Run's error", cause)
			}
			_ = wait(t, done)
			if tc.block == "" && tc.runErr == nil {
				if first := <-svc.leftFirst; !first {
					t.Error("Run's context ended while Leaving was still going on")
				}
			}
		})
	}
}

// The end of the context given to Run is a stop: it ends Leaving (on a
// goroutine of context.AfterFunc's, so not before cancel returns), before
// Service.Run's context.
func TestLeavingEndsWhenRunsContextEnds(t *testing.T) {
	f := newFixture(t)
	svc := newBindingService()
	in, err := New(svc, f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	<-svc.running
	if err := in.Leaving().Err(); err != nil {
		t.Fatalf("Leaving ended in running: %v", err)
	}
	cancel()
	select {
	case <-in.Leaving().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Leaving still going on 10s after Run's context ended")
	}
	if c := context.Cause(in.Leaving()); c == nil || !strings.Contains(c.Error(), "stop") {
		t.Errorf("context.Cause = %v, want a stop", c)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if first := <-svc.leftFirst; !first {
		t.Error("Service.Run's context ended while Leaving was still going on")
	}
}

func TestLeavingEndsWhenRunReturnsOnItsOwn(t *testing.T) {
	f := newFixture(t)
	var in *Instance
	ret := make(chan struct{})
	in, err := New(runFunc(func(ctx context.Context) error {
		<-ret
		if err := in.Leaving().Err(); err != nil {
			t.Errorf("Leaving ended while Run was still running: %v", err)
		}
		return nil
	}), f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
	close(ret)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if c := context.Cause(in.Leaving()); c == nil || !strings.Contains(c.Error(), "Service.Run returned") {
		t.Errorf("context.Cause = %v, want Service.Run returned", c)
	}
}

// With a drain delay, Leaving ends at the stop, while Run's context goes on
// for the delay: the time a worker has to finish the work in hand.
func TestLeavingEndsAtTheStopBeforeTheDrainDelay(t *testing.T) {
	f := newFixture(t)
	svc := newDrainService()
	const delay = 10 * time.Second
	in, err := New(svc, f.options(WithDrainDelay(delay), WithShutdownTimeout(time.Minute))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	svc.waitRun(t)
	in.RequestStop()
	if in.Leaving().Err() == nil {
		t.Fatal("Leaving goes on after the stop")
	}
	if svc.runCancelled() || in.State() != phases.Draining {
		t.Fatalf("Run cancelled %v, state %s: want Run going on in draining", svc.runCancelled(), in.State())
	}
	f.clock.Advance(delay)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

// A drain op takes the instance out of rotation, not out of its work:
// Leaving goes on through Drain and Undrain, and ends at the stop.
func TestADrainOpDoesNotEndLeaving(t *testing.T) {
	f := newFixture(t)
	svc := newDrainService()
	in, err := New(svc, f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	svc.waitRun(t) // a drain op needs Run under way, not only the state
	if err := in.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := in.Leaving().Err(); err != nil || in.State() != phases.Draining {
		t.Fatalf("after Drain: state %s, Leaving %v; want draining and Leaving going on", in.State(), err)
	}
	if err := in.Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := in.Leaving().Err(); err != nil {
		t.Fatalf("after Undrain: Leaving %v, want it going on", err)
	}
	if err := in.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	in.RequestStop() // from draining
	if in.Leaving().Err() == nil {
		t.Fatal("a stop of a drained instance did not end Leaving")
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

// waitBlocked waits until a client of srv is blocked in cmd (CLIENT LIST's
// cmd field, flag b).
func waitBlocked(t *testing.T, rdb *redis.Client, cmd string) {
	t.Helper()
	pollUntil(t, 10*time.Second, "a client blocked in "+cmd, func() bool {
		list, err := rdb.ClientList(context.Background()).Result()
		if err != nil {
			return false
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " cmd="+cmd) && strings.Contains(line, " flags=b") {
				return true
			}
		}
		return false
	})
}

// The reason BlockingRedis exists, on a real redis-server: the end of a
// context does not end a read blocked through the instance's client, and
// ends one blocked through BlockingRedis at once.
func TestBlockingRedisEndsABlockedReadWhenItsContextEnds(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server")
	}
	srv := redistest.Server(t)
	admin := srv.Client(t)
	client := deadlineClient(t, srv.Addr())
	in, err := New(newTestService(), newFaultRig(t).options(client)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := client.XGroupCreateMkStream(ctx, "s", "g", "$").Err(); err != nil {
		t.Fatal(err)
	}
	read := func(c redis.UniversalClient, ctx context.Context, block time.Duration) <-chan error {
		errc := make(chan error, 1)
		go func() {
			errc <- c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{"s", ">"}, Block: block}).Err()
		}()
		return errc
	}

	// Through Redis: cancelled, the read still waits its whole BLOCK.
	const shortBlock = 2 * time.Second
	rctx, cancelRead := context.WithCancel(ctx)
	start := time.Now()
	errc := read(in.Redis(), rctx, shortBlock)
	waitBlocked(t, admin, "xreadgroup")
	cancelRead()
	err = <-errc
	if held := time.Since(start); held < shortBlock-100*time.Millisecond {
		t.Fatalf("a cancelled read through Redis() ended after %v (%v), before its BLOCK of %v: "+
			"go-redis now ends blocked reads at cancellation; BlockingRedis may be unneeded", held, err, shortBlock)
	}

	// Through BlockingRedis: at once, with a BLOCK of 30s. The bound leaves
	// a busy machine room; the figure is logged.
	const block, bound = 30 * time.Second, 5 * time.Second
	bctx, cancelBlocking := context.WithCancel(ctx)
	errc = read(in.BlockingRedis(bctx), bctx, block)
	waitBlocked(t, admin, "xreadgroup")
	start = time.Now()
	cancelBlocking()
	select {
	case err := <-errc:
		if err == nil || errors.Is(err, redis.Nil) {
			t.Errorf("the read ended with %v, want an error: a read that timed out would be redis.Nil", err)
		}
		t.Logf("read with BLOCK %v ended %v after its context", block, time.Since(start))
	case <-time.After(bound):
		t.Fatalf("the read with BLOCK %v still blocked %v after its context ended", block, bound)
	}
	// The instance's own client goes on.
	if err := in.Redis().Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis() after BlockingRedis closed: %v", err)
	}
	// A context that already ended gives a client that only fails (it is
	// closed as BlockingRedis returns, or just after).
	ended := in.BlockingRedis(bctx)
	pollUntil(t, 5*time.Second, "the client of an ended context closed", func() bool {
		return errors.Is(ended.Ping(ctx).Err(), redis.ErrClosed)
	})
}

func TestBlockingRedisReturnsAClientItCannotCopyAsItIs(t *testing.T) {
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	f := newFixture(t)
	in, err := New(newTestService(), f.options(WithRedis(ring))...)
	if err != nil {
		t.Fatal(err)
	}
	if c := in.BlockingRedis(t.Context()); c != redis.UniversalClient(ring) {
		t.Fatalf("BlockingRedis with a Ring = %T, want the Ring itself", c)
	}
}
