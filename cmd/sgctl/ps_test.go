package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/agefmt"
	"github.com/stargazer/lifecycle/registry"
)

// fleet is a miniredis holding registry entries written at t0 through
// package registry, with a TTL of ttl.
type fleet struct {
	mr  *miniredis.Miniredis
	t0  time.Time
	env map[string]string
}

func newFleet(t *testing.T, ttl time.Duration, entries ...registry.Entry) *fleet {
	t.Helper()
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	// The writer's clock is a little behind the real one, so the index
	// scores are in the future for the Instances read in ps (real clock).
	t0 := time.Now().Truncate(time.Millisecond)
	reg := registry.New(c, registry.WithTTL(ttl), registry.WithClock(clockwork.NewFakeClockAt(t0)))
	for _, e := range entries {
		if err := reg.Register(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	return &fleet{mr: mr, t0: t0, env: map[string]string{"REDIS_URL": "redis://" + mr.Addr()}}
}

func demoEntries(t0 time.Time) []registry.Entry {
	return []registry.Entry{
		{Service: "demo", Instance: "demo-a", Status: "running", Host: "h1", PID: 101, Version: "1", StartedAt: t0.Add(-2 * time.Hour), Control: "signed", Addr: "10.0.0.7:8080"},
		{Service: "demo", Instance: "demo-b", Status: "registering", Phase: "8", Host: "h2", PID: 102, Version: "1", StartedAt: t0.Add(-3 * time.Second), Degraded: true, Control: "insecure"},
		{Service: "api", Instance: "api-1", Status: "stopping_daemons", Phase: "S1", Host: "h3", PID: 7, StartedAt: t0.Add(-90 * time.Second)},
	}
}

// rows splits a table into its lines' whitespace-separated fields.
func rows(out string) [][]string {
	var rs [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rs = append(rs, strings.Fields(l))
	}
	return rs
}

func TestPsPrintsOneRowPerLiveInstanceOfEveryService(t *testing.T) {
	now := time.Now().Truncate(time.Millisecond)
	f := newFleet(t, 30*time.Second, demoEntries(now)...)
	at := func() time.Time { return f.t0.Add(5 * time.Second) }

	r := sgctl(t, t.Context(), f.env, at, "ps")
	if r.code != exitOK {
		t.Fatalf("exit code %d, want 0", r.code)
	}
	got := rows(r.stdout)
	// Services sorted, then instances; the heartbeat is 5s old (now - (score
	// - TTL)); uptime counts from started_at.
	up := func(d time.Duration) string { return agefmt.Format(f.t0.Add(5 * time.Second).Sub(now.Add(-d))) }
	want := [][]string{
		{"SERVICE", "INSTANCE", "STATUS", "PHASE", "HOST", "PID", "UPTIME", "HEARTBEAT", "DEGRADED", "CONTROL", "ADDR"},
		{"api", "api-1", "stopping_daemons", "S1", "h3", "7", up(90 * time.Second), "5s", "false", "-", "-"},
		{"demo", "demo-a", "running", "-", "h1", "101", up(2 * time.Hour), "5s", "false", "signed", "10.0.0.7:8080"},
		{"demo", "demo-b", "registering", "8", "h2", "102", up(3 * time.Second), "5s", "true", "insecure", "-"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), r.stdout)
	}
	for i := range want {
		if strings.Join(got[i], " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d:\n got %q\nwant %q", i, got[i], want[i])
		}
	}
	if got[2][6] != "2h0m" {
		t.Errorf("uptime of demo-a %q, want 2h0m", got[2][6])
	}
}

func TestPsOfOneServiceListsOnlyItsInstances(t *testing.T) {
	f := newFleet(t, 30*time.Second, demoEntries(time.Now())...)
	r := sgctl(t, t.Context(), f.env, nil, "ps", "demo")
	if r.code != exitOK {
		t.Fatalf("exit code %d, want 0", r.code)
	}
	got := rows(r.stdout)
	if len(got) != 3 || got[1][1] != "demo-a" || got[2][1] != "demo-b" {
		t.Fatalf("want the header and demo-a, demo-b:\n%s", r.stdout)
	}
}

func TestPsDatesTheHeartbeatWithTheFleetTTLFromTheEnvironment(t *testing.T) {
	f := newFleet(t, 9*time.Second, demoEntries(time.Now())[:1]...)
	at := func() time.Time { return f.t0.Add(2 * time.Second) }
	f.env["SG_SERVICE_TTL"] = "9s"
	r := sgctl(t, t.Context(), f.env, at, "ps", "demo")
	if got := rows(r.stdout); len(got) != 2 || got[1][7] != "2s" {
		t.Fatalf("want a heartbeat 2s old with SG_SERVICE_TTL=9s:\n%s", r.stdout)
	}
	// The age is only as right as the TTL sgctl is told: a larger one makes
	// the heartbeat look older, a smaller one younger (clamped at 0).
	r = sgctl(t, t.Context(), f.env, at, "ps", "demo", "--ttl", "30s")
	if got := rows(r.stdout); len(got) != 2 || got[1][7] != "23s" {
		t.Fatalf("want a heartbeat 23s old with --ttl 30s:\n%s", r.stdout)
	}
	r = sgctl(t, t.Context(), f.env, at, "ps", "demo", "--ttl", "5s")
	if got := rows(r.stdout); len(got) != 2 || got[1][7] != "0ms" {
		t.Fatalf("want a heartbeat age clamped at 0ms with --ttl 5s:\n%s", r.stdout)
	}
}

func TestPsRejectsAnInvalidServiceTTLInTheEnvironment(t *testing.T) {
	r := sgctl(t, t.Context(), map[string]string{"SG_SERVICE_TTL": "forever"}, nil, "ps")
	if r.code != exitUsage || !strings.Contains(r.stderr, `SG_SERVICE_TTL="forever"`) {
		t.Fatalf("got %d %q, want exit 2 naming SG_SERVICE_TTL", r.code, r.stderr)
	}
}

func TestPsJSONDecodesToTheEntriesWithDerivedFields(t *testing.T) {
	now := time.Now().Truncate(time.Millisecond)
	f := newFleet(t, 30*time.Second, demoEntries(now)...)
	at := func() time.Time { return f.t0.Add(5 * time.Second) }
	r := sgctl(t, t.Context(), f.env, at, "ps", "demo", "--json")
	if r.code != exitOK {
		t.Fatalf("exit code %d, want 0", r.code)
	}
	var got []struct {
		registry.Entry
		ExpiresAt      *time.Time `json:"expires_at"`
		UptimeMS       *int64     `json:"uptime_ms"`
		HeartbeatAgeMS *int64     `json:"heartbeat_age_ms"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json output does not decode: %v\n%s", err, r.stdout)
	}
	if len(got) != 2 {
		t.Fatalf("got %d instances, want 2", len(got))
	}
	a := got[0]
	if a.Instance != "demo-a" || a.Status != "running" || a.PID != 101 || a.Host != "h1" || a.Degraded || !got[1].Degraded {
		t.Errorf("entry fields not carried over: %+v", got)
	}
	if a.HeartbeatAgeMS == nil || *a.HeartbeatAgeMS != 5000 {
		t.Errorf("heartbeat_age_ms %v, want 5000", a.HeartbeatAgeMS)
	}
	if want := f.t0.Add(5 * time.Second).Sub(now.Add(-2 * time.Hour)).Milliseconds(); a.UptimeMS == nil || *a.UptimeMS != want {
		t.Errorf("uptime_ms %v, want %d", a.UptimeMS, want)
	}
	if a.ExpiresAt == nil || !a.ExpiresAt.Equal(f.t0.Add(30*time.Second)) {
		t.Errorf("expires_at %v, want %v", a.ExpiresAt, f.t0.Add(30*time.Second))
	}
}

func TestPsOfAServiceWithoutInstancesSaysSoAndSucceeds(t *testing.T) {
	f := newFleet(t, 30*time.Second, demoEntries(time.Now())...)
	r := sgctl(t, t.Context(), f.env, nil, "ps", "ghost")
	if r.code != exitOK || r.stdout != "" || !strings.Contains(r.stderr, `No live instances of service "ghost"`) {
		t.Fatalf("got %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = sgctl(t, t.Context(), f.env, nil, "ps", "ghost", "--json")
	if r.code != exitOK || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("--json: got %d, stdout %q, want []", r.code, r.stdout)
	}
}

func TestPsSkipsInstancesWhoseEntryExpired(t *testing.T) {
	f := newFleet(t, 30*time.Second, demoEntries(time.Now())...)
	f.mr.Del(registry.EntryKey("demo", "demo-a")) // as if its TTL ran out
	r := sgctl(t, t.Context(), f.env, nil, "ps", "demo")
	if got := rows(r.stdout); len(got) != 2 || got[1][1] != "demo-b" {
		t.Fatalf("want only demo-b listed:\n%s", r.stdout)
	}
}

func TestPsShowsPerServiceWhetherInstancesAcceptUnsignedOps(t *testing.T) {
	now := time.Now()
	f := newFleet(t, 30*time.Second,
		registry.Entry{Service: "api", Instance: "api-1", Status: "running", StartedAt: now, Control: "signed"},
		registry.Entry{Service: "api", Instance: "api-2", Status: "running", StartedAt: now, Control: "disabled"},
		registry.Entry{Service: "demo", Instance: "demo-1", Status: "running", StartedAt: now, Control: "insecure"},
		registry.Entry{Service: "demo", Instance: "demo-2", Status: "running", StartedAt: now, Control: "signed"},
		registry.Entry{Service: "demo", Instance: "demo-3", Status: "running", StartedAt: now, Control: "\x1b[2Jevil"},
	)
	r := sgctl(t, t.Context(), f.env, nil, "ps")
	if r.code != exitOK {
		t.Fatalf("exit code %d", r.code)
	}
	control := map[string]string{}
	for _, row := range rows(r.stdout)[1:] {
		control[row[1]] = row[9]
	}
	want := map[string]string{"api-1": "signed", "api-2": "disabled", "demo-1": "insecure", "demo-2": "signed", "demo-3": "?"}
	for id, m := range want {
		if control[id] != m {
			t.Errorf("%s: CONTROL %q, want %q:\n%s", id, control[id], m, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\x1b") {
		t.Errorf("an unknown control value reached the terminal:\n%q", r.stdout)
	}
	if !strings.Contains(r.stderr, `service "demo": 1 of 3 instances accept unsigned control ops (SG_CONTROL_INSECURE=true)`) || strings.Contains(r.stderr, `"api"`) {
		t.Errorf("stderr %q, want one warning, for demo only", r.stderr)
	}
	r = sgctl(t, t.Context(), f.env, nil, "ps", "demo", "--json")
	var got []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 3 || got[0]["control"] != "insecure" {
		t.Fatalf("ps --json: %v %s", err, r.stdout)
	}
}
