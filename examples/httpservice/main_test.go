package main

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(proctest.Main(m)) }

// start runs httpservice with env added to a minimal environment: loopback,
// free ports, no jitter, no exporters. The process is named by its
// SG_INSTANCE_ID, when env gives one. A restart by exec keeps the process.
func start(t *testing.T, env ...string) *proctest.Proc {
	t.Helper()
	name := "httpservice"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "SG_INSTANCE_ID="); ok {
			name = v
		}
	}
	return proctest.Start(t, proctest.Cmd{Bin: proctest.Build(t, proctest.Module+"/examples/httpservice"), Name: name,
		Env: append([]string{"HTTP_ADDR=127.0.0.1:0", "SG_HEALTH_PORT=0", "SG_BOOT_JITTER=0",
			"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}, env...)})
}

// Its lines name the service and the instance: it logs through the
// instance's logger (Bind).
var listening = regexp.MustCompile(`msg=listening service=httpservice instance=\S+ addr=(\S+)`)

// get returns the status and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServesItsInstanceIDWithoutRedisAndStopsCleanly(t *testing.T) {
	p := start(t, "SG_INSTANCE_ID=hs-1")
	addr := p.WaitForMatch(t, listening)[1]
	p.WaitFor(t, `msg="boot completed"`)
	if code, body := get(t, "http://"+addr+"/"); code != http.StatusOK || body != "hs-1\n" {
		t.Fatalf("GET /: %d %q, want 200 and the instance id", code, body)
	}
	if code, _ := get(t, "http://"+addr+"/nothing"); code != http.StatusNotFound {
		t.Errorf("GET /nothing: %d, want 404", code)
	}
	_ = p.Signal(syscall.SIGTERM)
	if c := p.Wait(t); c != 0 {
		t.Fatalf("exit code %d, want 0", c)
	}
	if out := p.Output(); !strings.Contains(out, `msg="REDIS_URL is unset: serving without the registry (nothing advertises this instance, no control op reaches it)" service=httpservice instance=hs-1`) ||
		!strings.Contains(out, `msg="HTTP drained" service=httpservice instance=hs-1`) {
		t.Errorf("output lacks the no-Redis notice or the drain:\n%s", out)
	}
}

func TestATakenPortFailsPhaseSevenNamingTheAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().String()
	p := start(t, "HTTP_ADDR="+taken)
	if c := p.Wait(t); c != 1 {
		t.Fatalf("exit code %d, want 1", c)
	}
	out := p.Output()
	for _, want := range []string{
		"from=starting to=stopping_daemons event=fail",
		"phase starting: Service.OnStart: listening on " + taken + " (HTTP_ADDR)",
		"address already in use",
		"to=failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out, "to=registering") {
		t.Error("the boot went past phase 7")
	}
}

func TestABadHTTPAddrExitsTwoNamingIt(t *testing.T) {
	for _, bad := range []string{"8080", "127.0.0.1:99999", "localhost:http"} {
		p := start(t, "HTTP_ADDR="+bad)
		if c := p.Wait(t); c != 2 {
			t.Fatalf("HTTP_ADDR=%s: exit code %d, want 2", bad, c)
		}
		if out := p.Output(); !strings.Contains(out, `HTTP_ADDR=\"`+bad+`\"`) {
			t.Errorf("HTTP_ADDR=%s: output does not name it:\n%s", bad, out)
		}
	}
}

func TestABadAdvertiseAddrExitsTwoBeforeRedis(t *testing.T) {
	p := start(t, "SG_ADVERTISE_ADDR=0.0.0.0:8080", "REDIS_URL=redis://127.0.0.1:1/0")
	if c := p.Wait(t); c != 2 {
		t.Fatalf("exit code %d, want 2", c)
	}
	if out := p.Output(); !strings.Contains(out, `SG_ADVERTISE_ADDR=\"0.0.0.0:8080\"`) || strings.Contains(out, "boot started") {
		t.Errorf("output does not name SG_ADVERTISE_ADDR, or the boot began:\n%s", out)
	}
}

func TestWithRedisItAdvertisesThePortItBound(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server")
	}
	srv := redistest.Server(t)
	p := start(t, "REDIS_URL="+srv.URL(), "SG_INSTANCE_ID=hs-1")
	addr := p.WaitForMatch(t, listening)[1]
	reg := registry.New(srv.Client(t))
	var e registry.Entry
	deadline := time.Now().Add(20 * time.Second)
	for e.Status != "running" {
		if time.Now().After(deadline) {
			t.Fatalf("never running: %+v", e)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
		e, _ = reg.Entry(t.Context(), "httpservice", "hs-1")
	}
	if e.Addr != addr || strings.HasSuffix(addr, ":0") {
		t.Errorf("entry addr %q, want the bound address %s", e.Addr, addr)
	}

	// SG_ADVERTISE_ADDR wins.
	q := start(t, "REDIS_URL="+srv.URL(), "SG_INSTANCE_ID=hs-2", "SG_ADVERTISE_ADDR=api-2.internal:8443")
	q.WaitFor(t, `msg="boot completed"`)
	if e, err := reg.Entry(t.Context(), "httpservice", "hs-2"); err != nil || e.Addr != "api-2.internal:8443" {
		t.Errorf("entry %+v, %v: want addr api-2.internal:8443", e, err)
	}
}
