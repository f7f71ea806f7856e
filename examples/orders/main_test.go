package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(proctest.Main(m)) }

// The keys of the service orders, as Bind names them.
const (
	streamKey    = "orders:{orders}:incoming"
	processedKey = "orders:{orders}:processed"
)

// start runs the example with env added to a minimal environment: loopback,
// free ports, no jitter, no exporters, instance o-1 unless env names
// another.
func start(t *testing.T, env ...string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, proctest.Cmd{Bin: proctest.Build(t, proctest.Module+"/examples/orders"), Name: "orders",
		Env: append([]string{"HTTP_ADDR=127.0.0.1:0", "SG_HEALTH_PORT=0", "SG_BOOT_JITTER=0", "SG_INSTANCE_ID=o-1",
			"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}, env...)})
}

// The service's own lines carry the instance's fields: they are logged
// through Instance.Logger.
var (
	listening  = regexp.MustCompile(`msg=listening service=orders instance=o-1 addr=(\S+)`)
	takingNew  = `msg="worker: taking new orders" service=orders instance=o-1`
	stoppedAt  = regexp.MustCompile(`msg="worker: stopped taking orders" service=orders instance=o-1 last=(\S*) why=`)
	apiStopped = `msg="HTTP API stopped" service=orders instance=o-1`
)

// call sends a request and returns the status and the decoded JSON body.
func call(t *testing.T, method, url, body string) (int, map[string]string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]string
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s: %d %q is not a JSON object", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, v
}

// poll polls cond every 10ms until it holds, or fails the test after within.
func poll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// waitBlocked waits until a client is blocked in XREADGROUP on the server
// (CLIENT LIST: cmd=xreadgroup, flag b): the worker waits for orders. The
// control-ops daemon blocks too, in XREAD.
func waitBlocked(t *testing.T, admin *redis.Client) {
	t.Helper()
	poll(t, 20*time.Second, "the worker blocked in XREADGROUP", func() bool {
		list, err := admin.ClientList(context.Background()).Result()
		if err != nil {
			return false
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " flags=b ") && strings.Contains(line, " cmd=xreadgroup") {
				return true
			}
		}
		return false
	})
}

// streamState is what became of the orders of the stream.
type streamState struct {
	acked, pending, unread int
	lastDelivered          string
	pendingIDs             []string
}

// checkNothingHalfDone reads the stream, the group (XINFO GROUPS, XPENDING)
// and the effects, and fails the test for any order half done: acked
// (delivered, no longer pending) without its effect, or with an effect
// while pending or unread. An effect without an order fails it too.
func checkNothingHalfDone(t *testing.T, rdb *redis.Client) streamState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st streamState
	groups, err := rdb.XInfoGroups(ctx, streamKey).Result()
	if err != nil {
		t.Fatalf("XINFO GROUPS: %v", err)
	}
	for _, g := range groups {
		if g.Name == group {
			st.lastDelivered = g.LastDeliveredID
		}
	}
	entries, err := rdb.XRange(ctx, streamKey, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	pend, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: streamKey, Group: group, Start: "-", End: "+", Count: 1 << 20}).Result()
	if err != nil {
		t.Fatal(err)
	}
	pending := map[string]bool{}
	for _, p := range pend {
		pending[p.ID] = true
	}
	effects, err := rdb.HGetAll(ctx, processedKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.ID] = true
		delivered := !idLess(st.lastDelivered, e.ID)
		_, effect := effects[e.ID]
		switch {
		case pending[e.ID]:
			st.pending++
			st.pendingIDs = append(st.pendingIDs, e.ID)
			if effect {
				t.Errorf("order %s: effect written, still pending (not acked)", e.ID)
			}
		case delivered:
			st.acked++
			if !effect {
				t.Errorf("order %s: acked, no effect", e.ID)
			}
		default:
			st.unread++
			if effect {
				t.Errorf("order %s: effect written, never delivered", e.ID)
			}
		}
	}
	for id := range effects {
		if !seen[id] {
			t.Errorf("effect for %s, which is no order of the stream", id)
		}
	}
	return st
}

// idLess orders stream ids ("ms-seq").
func idLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || am == bm && as < bs
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	s, _ := strconv.ParseUint(seq, 10, 64)
	return m, s
}

func TestABadSettingExitsTwoNamingIt(t *testing.T) {
	url := "REDIS_URL=redis://127.0.0.1:1/0" // never reached
	for _, tc := range []struct{ env []string }{
		{nil},
		{[]string{url, "ORDERS_BLOCK=0"}},
		{[]string{url, "ORDERS_BLOCK=soon"}},
		{[]string{url, "ORDERS_WORK=-1s"}},
		{[]string{url, "HTTP_ADDR=8081"}},
	} {
		named := `REDIS_URL=\"\"`
		if len(tc.env) > 1 {
			k, v, _ := strings.Cut(tc.env[1], "=")
			named = k + `=\"` + v + `\"`
		}
		p := start(t, tc.env...)
		if c := p.Wait(t); c != 2 {
			t.Fatalf("%v: exit code %d, want 2", tc.env, c)
		}
		if out := p.Output(); !strings.Contains(out, named) || strings.Contains(out, "boot started") {
			t.Errorf("%v: the output does not name %s, or the boot began:\n%s", tc.env, named, out)
		}
	}
}

// An order taken by the API is processed by the worker; every line the
// process writes, the service's own included, carries the instance's
// fields: the logger Main gives the service (Instance.Logger) is the one it
// logs through itself.
func TestAnOrderTakenByTheAPIIsProcessedAndEveryLineNamesTheInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server")
	}
	srv := redistest.Server(t)
	p := start(t, "REDIS_URL="+srv.URL())
	base := "http://" + p.WaitForMatch(t, listening)[1]
	p.WaitFor(t, takingNew)

	code, body := call(t, "POST", base+"/orders", `{"item":"tea","qty":2}`)
	id := body["id"]
	if code != http.StatusAccepted || id == "" {
		t.Fatalf("POST /orders: %d %v, want 202 with an id", code, body)
	}
	poll(t, 20*time.Second, "order "+id+" processed", func() bool {
		_, body := call(t, "GET", base+"/orders/"+id, "")
		return body["status"] == "processed" && body["by"] == "o-1"
	})
	if code, _ := call(t, "GET", base+"/orders/1-1", ""); code != http.StatusNotFound {
		t.Errorf("GET an unknown order: %d, want 404", code)
	}
	if code, _ := call(t, "POST", base+"/orders", `{"item":"tea"}`); code != http.StatusBadRequest {
		t.Errorf("POST an order without qty: %d, want 400", code)
	}
	_ = p.Signal(syscall.SIGTERM)
	if c := p.Wait(t); c != 0 {
		t.Fatalf("exit code %d, want 0", c)
	}
	if st := checkNothingHalfDone(t, srv.Client(t)); st.acked != 1 || st.pending+st.unread != 0 {
		t.Errorf("%+v, want the one order acked", st)
	}
	out := p.Output()
	for _, want := range []string{apiStopped, `msg="worker: stopped taking orders"`, "to=stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	checkEveryLineNamesTheInstance(t, out)
}

var instanceFields = regexp.MustCompile(`(^| )service=orders instance=o-1( |$)`)

// checkEveryLineNamesTheInstance fails the test for a line of out that
// does not name the service and the instance, or names them twice.
func checkEveryLineNamesTheInstance(t *testing.T, out string) {
	t.Helper()
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if !instanceFields.MatchString(line) || strings.Count(line, "service=") != 1 || strings.Count(line, "instance=") != 1 {
			t.Errorf("line %d does not name the service and the instance once: %s", i+1, line)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writes of a log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
