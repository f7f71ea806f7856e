// Package systemd_test checks the example unit and environment file of
// deploy/systemd against the library's constants: the unit type the
// notifications need, a stop timeout above the shutdown timeout and the
// drain delay, and an environment the instance accepts.
package systemd_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/process"
	lcservice "github.com/stargazer/lifecycle/service"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// service returns the [Service] options of demo.service, parsed by
// go-systemd's unit package, by name (the last value of a repeated one).
func service(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("demo.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sections, err := unit.DeserializeSections(f)
	if err != nil {
		t.Fatalf("demo.service does not parse: %v", err)
	}
	names := map[string]bool{}
	var out map[string]string
	for _, s := range sections {
		names[s.Section] = true
		if s.Section == "Service" {
			out = map[string]string{}
			for _, e := range s.Entries {
				out[e.Name] = e.Value
			}
		}
	}
	for _, want := range []string{"Unit", "Service", "Install"} {
		if !names[want] {
			t.Errorf("demo.service has no [%s] section", want)
		}
	}
	if out == nil {
		t.Fatal("demo.service has no [Service] section")
	}
	return out
}

// span parses a systemd time span of the simple forms the unit uses: a Go
// duration ("30s", "1min" is not one) or bare seconds.
func span(t *testing.T, name, v string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: not a time span this test reads (use forms like 30s)", name, v)
	}
	return d
}

// environment reads demo.env: KEY=VALUE lines, comments and blank lines.
func environment(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("demo.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("demo.env: %q is not KEY=VALUE", line)
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return env
}

func TestTheUnitIsTypeNotifyWithAWatchdogAndStopsAfterTheShutdown(t *testing.T) {
	s := service(t)
	env := environment(t)
	if s["Type"] != "notify" || s["NotifyAccess"] != "main" {
		t.Errorf("Type=%q NotifyAccess=%q, want notify and main: the instance sends READY=1, STOPPING=1 and WATCHDOG=1 from its main process", s["Type"], s["NotifyAccess"])
	}
	wd := span(t, "WatchdogSec", s["WatchdogSec"])
	if wd < 2*time.Second {
		t.Errorf("WatchdogSec=%v: want a watchdog of at least 2s (pings every half of it)", wd)
	}
	drain := time.Duration(0)
	if v := env[fleetenv.DrainDelay]; v != "" {
		drain = span(t, fleetenv.DrainDelay, v)
	}
	if stop := span(t, "TimeoutStopSec", s["TimeoutStopSec"]); stop <= lcservice.DefaultShutdownTimeout+drain {
		t.Errorf("TimeoutStopSec=%v: want more than the shutdown timeout %v plus the drain delay %v", stop, lcservice.DefaultShutdownTimeout, drain)
	}
	if start := span(t, "TimeoutStartSec", s["TimeoutStartSec"]); start < 10*time.Second {
		t.Errorf("TimeoutStartSec=%v: a slow boot extends it every 5s (or every WatchdogSec/2): give it at least 10s", start)
	}
	if !strings.Contains(" "+s["RestartPreventExitStatus"]+" ", " "+strconv.Itoa(process.ExitConfig)+" ") {
		t.Errorf("RestartPreventExitStatus=%q: a bad configuration (exit %d) should not restart in a loop", s["RestartPreventExitStatus"], process.ExitConfig)
	}
	if filepath.Base(s["EnvironmentFile"]) != "demo.env" {
		t.Errorf("EnvironmentFile=%q, want the example demo.env installed", s["EnvironmentFile"])
	}
	if !strings.HasSuffix(strings.Fields(s["ExecStart"])[0], "/demo") {
		t.Errorf("ExecStart=%q, want the demo binary", s["ExecStart"])
	}
}

func TestTheEnvironmentFileIsOneTheInstanceAccepts(t *testing.T) {
	env := environment(t)
	known := map[string]bool{}
	for _, k := range []string{fleetenv.RedisURL, fleetenv.RedisRequired, fleetenv.RedisTimeout, fleetenv.BootJitter, fleetenv.BootTimeout,
		fleetenv.ServiceTTL, fleetenv.HealthPort, fleetenv.HealthHost, fleetenv.ServiceName, fleetenv.InstanceID, fleetenv.ControlKey,
		fleetenv.ControlInsecure, fleetenv.DrainDelay, process.EnvRestartExitCode} {
		known[k] = true
	}
	for k := range env {
		if !known[k] && !strings.HasPrefix(k, "OTEL_") {
			t.Errorf("demo.env sets %s, which the library does not read", k)
		}
	}
	parsed, err := process.ParseEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("demo.env is invalid: the instance would exit %d: %v", process.ExitConfig, err)
	}
	if parsed.Redis != nil {
		_ = parsed.Redis.Close()
	}
	if parsed.DrainDelay >= lcservice.DefaultShutdownTimeout {
		t.Errorf("%s=%v: want it under the shutdown timeout %v", fleetenv.DrainDelay, parsed.DrainDelay, lcservice.DefaultShutdownTimeout)
	}
	if parsed.HealthPortSet && parsed.HealthPort != lcservice.DefaultHealthPort {
		t.Errorf("%s=%d; the docs and probes assume %d", fleetenv.HealthPort, parsed.HealthPort, lcservice.DefaultHealthPort)
	}
	if len(parsed.ControlKeys) == 0 {
		t.Errorf("demo.env sets no %s: every control op would be rejected", fleetenv.ControlKey)
	}
}
