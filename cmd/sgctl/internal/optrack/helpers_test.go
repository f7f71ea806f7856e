package optrack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKey = []byte("optrack-test-key-0123456789abcdef")

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fleet is a service's instances on one Redis: a registry to write their
// entries and a client to send ops.
type fleet struct {
	rdb    redis.UniversalClient
	reg    *registry.Registry
	client *controlops.Client
}

func newFleet(t *testing.T, rdb redis.UniversalClient) *fleet {
	return &fleet{rdb: rdb, reg: registry.New(rdb, registry.WithLogger(quiet)), client: controlops.NewClient(rdb, testKey)}
}

func miniFleet(t *testing.T) *fleet {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return newFleet(t, rdb)
}

func entry(id, status, control string, pid int) registry.Entry {
	return registry.Entry{Service: "demo", Instance: id, Status: status, Host: "h1", PID: pid,
		StartedAt: time.Now().Add(-time.Hour).Truncate(time.Millisecond).UTC(), Control: control}
}

func (f *fleet) register(t *testing.T, es ...registry.Entry) {
	t.Helper()
	for _, e := range es {
		if err := f.reg.Register(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fleet) live(t *testing.T) []registry.Entry {
	t.Helper()
	es, err := f.reg.Instances(context.Background(), "demo")
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// plan plans op for the whole service as it is in the registry now.
func (f *fleet) plan(t *testing.T, op string) *Plan {
	t.Helper()
	p, err := NewPlan(op, "demo", "", f.live(t), true)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fleet) send(t *testing.T, p *Plan) controlops.Op {
	t.Helper()
	o, err := f.client.Send(context.Background(), p.Service, p.Op, p.Target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// awaitFinal waits (10s at most) until each of instances has written a final
// result of o, so that a Follow with a short deadline, there to let the
// others be missing, finds them however slow the daemons were.
func (f *fleet) awaitFinal(t *testing.T, o controlops.Op, instances ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs, err := f.client.Results(context.Background(), "demo", "0", 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		left := slices.DeleteFunc(slices.Clone(instances), func(in string) bool {
			return slices.ContainsFunc(rs, func(r controlops.Result) bool {
				return r.OpID == o.ID && r.Instance == in && r.Status != controlops.StatusAccepted
			})
		})
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no final result of op %s from %v after 10s", o.ID, left)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// result writes a result of o for instance as an instance's daemon does,
// signed with testKey.
func (f *fleet) result(t *testing.T, o controlops.Op, instance string, st controlops.Status, pid int) {
	t.Helper()
	r := controlops.SignResult(testKey, "demo", controlops.Result{OpID: o.ID, Op: o.Name, Entry: o.StreamID, Instance: instance,
		Status: st, At: time.Now(), State: "running", PID: pid})
	err := f.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: controlops.ResultsKey("demo"), Values: map[string]any{
		"op_id": r.OpID, "op": r.Op, "entry": r.Entry, "instance": r.Instance, "status": string(r.Status),
		"at": strconv.FormatInt(r.At.UnixMilli(), 10), "state": r.State, "pid": strconv.Itoa(r.PID), "key_id": r.KeyID, "sig": r.Sig,
	}}).Err()
	if err != nil {
		t.Fatal(err)
	}
}

// member is one instance: a real controlops daemon whose target keeps the
// instance's registry entry, as the lifecycle does. It runs pull, drain and
// undrain in the statuses the lifecycle runs them in.
type member struct {
	reg *registry.Registry

	mu sync.Mutex
	e  registry.Entry
}

func (m *member) Service() string  { return m.e.Service }
func (m *member) Instance() string { return m.e.Instance }
func (m *member) State() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e.Status
}

// Restartable reads the entry's status in the lifecycle table, as the
// lifecycle reads its state.
func (m *member) Restartable() bool {
	r := phases.Lifecycle().Role(phases.State(m.State()))
	return r == phases.RoleServing || r == phases.RoleDraining
}

func (m *member) Do(ctx context.Context, op string, _ json.RawMessage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := map[string][2]string{
		controlops.OpPull:    {"running", "running"},
		controlops.OpDrain:   {"running", "draining"},
		controlops.OpUndrain: {"draining", "running"},
	}
	step, ok := next[op]
	if !ok {
		return fmt.Errorf("%w: %q", controlops.ErrUnknownOp, op)
	}
	if m.e.Status != step[0] {
		return fmt.Errorf("%w: %q in %q", controlops.ErrInvalidState, op, m.e.Status)
	}
	m.e.Status = step[1]
	return m.reg.Register(ctx, m.e)
}

// start registers e and starts its daemon (signed with testKey when
// e.Control is signed, disabled otherwise), stopped by t.Cleanup.
func (f *fleet) start(t *testing.T, e registry.Entry) *member {
	t.Helper()
	f.register(t, e)
	m := &member{reg: f.reg, e: e}
	opts := []controlops.Option{controlops.WithLogger(quiet), controlops.WithBlock(100 * time.Millisecond)}
	if e.Control == string(controlops.ModeSigned) {
		opts = append(opts, controlops.WithKey(testKey))
	}
	d, err := controlops.New(f.rdb, m, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Running()
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
	return m
}

// seen records what Follow reported, in one list: under -race, callbacks
// that append to it without a lock check that Follow calls them one at a
// time.
type seen struct {
	log []string // "result instance status", "status instance status[ new]"
}

func (s *seen) tracker(f *fleet) *Tracker {
	return &Tracker{Registry: f.reg, Client: f.client, Every: 20 * time.Millisecond,
		OnResult: func(r controlops.Result) { s.log = append(s.log, "result "+r.Instance+" "+string(r.Status)) },
		OnStatus: func(e registry.Entry, fresh bool) {
			v := "status " + e.Instance + " " + e.Status
			if fresh {
				v += " new"
			}
			s.log = append(s.log, v)
		},
	}
}

// results and statuses return what was reported of each kind, without the
// kind, in order.
func (s *seen) results() []string  { return s.of("result ") }
func (s *seen) statuses() []string { return s.of("status ") }

func (s *seen) of(kind string) []string {
	var out []string
	for _, v := range s.log {
		if rest, ok := strings.CutPrefix(v, kind); ok {
			out = append(out, rest)
		}
	}
	return out
}
