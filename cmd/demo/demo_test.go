package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/process"
	"github.com/stargazer/lifecycle/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(proctest.Main(m)) }

const demoPkg = proctest.Module + "/cmd/demo"

// startDemo runs the demo with env beside a free health port and no boot
// jitter.
func startDemo(t *testing.T, env ...string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, proctest.Cmd{Bin: proctest.Build(t, demoPkg), Env: append([]string{"SG_HEALTH_PORT=0", "SG_BOOT_JITTER=0"}, env...)})
}

func TestDemoBootsWithEmbeddedRedisAndStopsCleanlyOnSIGTERM(t *testing.T) {
	p := startDemo(t)
	p.WaitFor(t, "embedded redis (miniredis) started")
	p.WaitFor(t, "boot completed")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	out := p.Output()
	// One line per transition, with from, to, event, phase and duration.
	for _, want := range []string{
		"msg=transition", "from=init to=connecting event=connect phase=2 duration=",
		"from=cleaning_up to=stopped event=cleaned_up", "demo: modules loaded",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if n := strings.Count(out, "msg=transition"); n != 14 {
		t.Errorf("%d transition lines, want 14", n)
	}
}

func TestDemoSecondSignalExitsAtOnce(t *testing.T) {
	p := startDemo(t, "DEMO_PHASE_DELAY=cleaning_up=1h")
	p.WaitFor(t, "boot completed")
	first := time.Now()
	_ = p.Signal(syscall.SIGTERM)
	p.WaitFor(t, "demo: slow phase")
	afterSignalWindow(first)
	_ = p.Signal(syscall.SIGTERM)
	if code := p.Wait(t); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(p.Output(), "signal received during the shutdown: exiting at once") {
		t.Error("log does not say why it exited")
	}
}

func TestDemoFailPhaseExitsOneAfterUnwinding(t *testing.T) {
	p := startDemo(t, "DEMO_FAIL_PHASE=building_adapters")
	if code := p.Wait(t); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	out := p.Output()
	for _, want := range []string{"failed on purpose", "to=stopping_daemons event=fail", "to=failed event=cleaned_up"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestDemoSlowPhaseIsVisible(t *testing.T) {
	p := startDemo(t, "DEMO_PHASE_DELAY=loading_modules=300ms")
	p.WaitFor(t, "boot completed")
	_ = p.Signal(syscall.SIGTERM)
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if !regexp.MustCompile(`msg="demo: slow phase" service=demo instance=\S+ state=loading_modules delay=300ms`).MatchString(p.Output()) {
		t.Errorf("the slow phase is not logged")
	}
}

func TestDemoBadKnobsExitTwoNamingThem(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"DEMO_PHASE_DELAY=loading_modules", "DEMO_PHASE_DELAY"},
		{"DEMO_PHASE_DELAY=nowhere=1s", `unknown state \"nowhere\"`},
		{"DEMO_PHASE_DELAY=starting=soon", `\"soon\"`},
		{"DEMO_FAIL_PHASE=everything", `DEMO_FAIL_PHASE=\"everything\"`},
		{"DEMO_HANG_PHASE=running", `DEMO_HANG_PHASE=\"running\"`},
		{"SG_BOOT_JITTER=abc", `SG_BOOT_JITTER=\"abc\"`},
		{"SG_DRAIN_DELAY=soon", `SG_DRAIN_DELAY=\"soon\"`},
		{"SG_DRAIN_DELAY=-1s", `SG_DRAIN_DELAY=\"-1s\"`},
	} {
		t.Run(tc.env, func(t *testing.T) {
			p := startDemo(t, tc.env)
			if code := p.Wait(t); code != 2 {
				t.Fatalf("exit code %d, want 2", code)
			}
			if out := p.Output(); !strings.Contains(out, tc.want) || strings.Contains(out, "embedded redis") {
				t.Errorf("output lacks %q or started Redis:\n%s", tc.want, out)
			}
		})
	}
}

// A '%' in the password makes the URL unparsable; it used to be printed whole.
func TestDemoReportsAnUnparsableRedisURLWithoutItsPassword(t *testing.T) {
	p := startDemo(t, "REDIS_URL=redis://user:p%ss@host:6379")
	if code := p.Wait(t); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	out := p.Output()
	if !strings.Contains(out, `REDIS_URL=\"redis://xxxxx@host:6379\"`) {
		t.Errorf("output does not name REDIS_URL with its userinfo masked:\n%s", out)
	}
	if strings.Contains(out, "p%ss") || strings.Contains(out, "user:") {
		t.Errorf("output shows the userinfo:\n%s", out)
	}
}

// healthAddr returns the address the demo's health server logged.
func healthAddr(t *testing.T, p *proctest.Proc) string {
	t.Helper()
	p.WaitFor(t, "health server listening")
	m := regexp.MustCompile(`msg="health server listening".* addr=(\S+)`).FindStringSubmatch(p.Output())
	if m == nil {
		t.Fatalf("no health address in the log")
	}
	return m[1]
}

// healthz returns the demo's /healthz body.
func healthz(t *testing.T, addr string) health.Response {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body health.Response
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body
}

// Two processes started with one SG_INSTANCE_ID against a real redis-server:
// the second takes the registry entry over; the first finds out at its next
// heartbeat, logs one error naming both processes and warns on /healthz; and
// stopping either never removes the entry of the other.
func TestTwoDemosWithOneInstanceIDNeverRemoveEachOthersEntry(t *testing.T) {
	for _, olderStopsFirst := range []bool{true, false} {
		name := "newer stops first"
		if olderStopsFirst {
			name = "older stops first"
		}
		t.Run(name, func(t *testing.T) {
			srv := redistest.Server(t)
			rc := srv.Client(t)
			env := []string{"REDIS_URL=" + srv.URL(), "SG_INSTANCE_ID=twin", "SG_SERVICE_TTL=3s"} // a heartbeat a second
			key := registry.EntryKey("demo", "twin")
			entry := func() (registry.Entry, bool) {
				raw, err := rc.Get(t.Context(), key).Result()
				if err != nil {
					return registry.Entry{}, false
				}
				var e registry.Entry
				return e, json.Unmarshal([]byte(raw), &e) == nil
			}

			older := startDemo(t, env...)
			older.WaitFor(t, "boot completed")
			newer := startDemo(t, env...)
			newer.WaitFor(t, "boot completed")
			booted := time.Now()
			olderPID, newerPID := older.PID(), newer.PID()
			if e, ok := entry(); !ok || e.PID != newerPID {
				t.Fatalf("entry %+v after the second boot, want the newer process's (pid %d)", e, newerPID)
			}

			older.WaitFor(t, "another process took this instance's entry over")
			t.Logf("conflict logged by the older process %v after the newer one booted (heartbeat every 1s)", time.Since(booted).Round(10*time.Millisecond))
			conflict := regexp.MustCompile(`level=WARN msg="registry: another process took[^\n]*`).FindString(older.Output())
			for _, want := range []string{fmt.Sprintf(" pid=%d ", olderPID), fmt.Sprintf(" owner_pid=%d", newerPID), " host=", " owner_host="} {
				if !strings.Contains(conflict, want) {
					t.Errorf("conflict line lacks %q: %s", want, conflict)
				}
			}
			if n := strings.Count(older.Output(), "another process took this instance's entry over"); n != 1 {
				t.Errorf("conflict logged %d times, want once", n)
			}
			if strings.Contains(newer.Output(), "level=ERROR") {
				t.Errorf("the newer process logged an error:\n%s", newer.Output())
			}
			if !strings.Contains(newer.Output(), "took over an entry that had not expired") {
				t.Errorf("the newer process did not warn that it took a live entry over:\n%s", newer.Output())
			}
			addr := healthAddr(t, older)
			deadline := time.Now().Add(20 * time.Second) // checks refresh every 5s
			for {
				body := healthz(t, addr)
				if c := body.Checks["registry:identity"]; len(c) == 1 && c[0].Status == health.StatusWarn {
					if body.Status != health.StatusWarn || !strings.Contains(c[0].Output, fmt.Sprintf("pid %d", newerPID)) {
						t.Errorf("/healthz = %+v, want warn naming the owner's pid %d", body, newerPID)
					}
					t.Logf("/healthz registry:identity warn %v after the newer process booted (checks refresh every 5s)", time.Since(booted).Round(10*time.Millisecond))
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("/healthz never showed registry:identity warn: %+v", body)
				}
				time.Sleep(100 * time.Millisecond)
			}

			stop := func(p *proctest.Proc) {
				t.Helper()
				if err := p.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				if code := p.Wait(t); code != 0 {
					t.Fatalf("exit code %d, want 0", code)
				}
			}
			if olderStopsFirst {
				stop(older)
				if e, ok := entry(); !ok || e.PID != newerPID || e.Status != "running" {
					t.Fatalf("after the older process stopped: entry %+v (found %v), want the newer's, running", e, ok)
				}
				stop(newer)
			} else {
				stop(newer) // deletes its own entry, never the older one's
				// The older one, which runs on, takes its entry back at its
				// next heartbeat (one a second).
				gone := time.Now()
				for {
					if e, ok := entry(); ok && e.PID == olderPID {
						t.Logf("the older process's entry back %v after the newer one stopped", time.Since(gone).Round(10*time.Millisecond))
						break
					}
					if time.Since(gone) > 10*time.Second {
						t.Fatal("the older process never took its entry back")
					}
					time.Sleep(10 * time.Millisecond) // polling interval, bounded above
				}
				stop(older)
			}
			if _, ok := entry(); ok {
				t.Error("entry left after both processes stopped")
			}
		})
	}
}

// afterSignalWindow returns once process.SignalWindow has passed since the
// signal sent at sent: a signal within the window is the same request, and
// these tests are about a second one. The window is a time rule of the
// process under test, so the wait is real time.
func afterSignalWindow(sent time.Time) {
	time.Sleep(time.Until(sent.Add(process.SignalWindow + 50*time.Millisecond)))
}

// Two SIGTERMs a millisecond apart, as coreutils timeout sends them to the
// process and its group, are one stop request: the demo stops cleanly and
// its entry is removed. Its OnStop is made slow, so the second signal lands
// during the shutdown steps, where a second request would exit at once.
func TestDemoTwoSIGTERMsAMillisecondApartStopItCleanly(t *testing.T) {
	srv := redistest.Server(t)
	p := startDemo(t, "REDIS_URL="+srv.URL(), "SG_INSTANCE_ID=demo-1", "DEMO_PHASE_DELAY=cleaning_up=300ms")
	p.WaitFor(t, "boot completed")
	_ = p.Signal(syscall.SIGTERM)
	time.Sleep(time.Millisecond) // the gap between the two signals: what the test is about
	_ = p.Signal(syscall.SIGTERM)
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0: one stop request, a clean stop", code)
	}
	if strings.Contains(p.Output(), "exiting at once") {
		t.Error("the second signal was taken for a second request")
	}
	if n, err := srv.Client(t).Exists(t.Context(), registry.EntryKey("demo", "demo-1")).Result(); err != nil || n != 0 {
		t.Errorf("the entry is still there (%d, %v): the stop was not carried out", n, err)
	}
}
