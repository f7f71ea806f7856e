package redisacl_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/balancer"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

const controlKey = "redisacl-test-control-key-0123"

// The document's lines are the rules the library names in its errors, and
// its redis.conf lines say the same as its ACL SETUSER lines.
func TestTheDocumentsLinesAreTheRulesTheLibraryNames(t *testing.T) {
	lines := docLines(t)
	for _, role := range redisacl.Roles {
		doc := roleRules(t, lines, role)
		if lib := redisacl.Rules(role); !slices.Equal(doc, lib) {
			t.Errorf("%s: the document's line has\n  %s\nthe library (internal/redisacl) names\n  %s", role, strings.Join(doc, " "), strings.Join(lib, " "))
		}
		l, _ := redisacl.RoleLine(lines, role)
		if !slices.Equal(l.Tokens[:3], []string{"reset", "on", ">PASSWORD"}) {
			t.Errorf("%s: the line starts %q, want reset on >PASSWORD", role, l.Tokens[:3])
		}
		conf, err := redisacl.ConfLine(lines, role)
		if err != nil {
			t.Error(err)
			continue
		}
		if !slices.Equal(conf.Rules(), doc) {
			t.Errorf("%s: the redis.conf line has\n  %s\nthe ACL SETUSER line\n  %s", role, strings.Join(conf.Rules(), " "), strings.Join(doc, " "))
		}
	}
	for _, bad := range []string{"+@all", "allcommands", "~*", "allkeys", "+flushall", "+flushdb", "+keys", "+config", "+acl", "+@admin", "+@dangerous"} {
		for _, role := range redisacl.Roles {
			if slices.Contains(redisacl.Rules(role), bad) {
				t.Errorf("%s grants %s", role, bad)
			}
		}
	}
	demoRules(t, lines)
}

// The role lines work as written: a server takes each, as ACL SETUSER and
// as the redis.conf user line at start.
func TestEveryLineOfTheDocumentIsAcceptedByRedis(t *testing.T) {
	lines := docLines(t)
	var args []string
	for _, role := range redisacl.Roles {
		conf, _ := redisacl.ConfLine(lines, role)
		args = append(args, "--user", string(role))
		for _, tok := range conf.Tokens {
			args = append(args, strings.ReplaceAll(tok, "PASSWORD", "conf-password"))
		}
	}
	srv := redistest.Server(t, args...)
	admin := srv.Client(t)
	ctx := t.Context()
	for _, role := range redisacl.Roles {
		got, err := admin.Do(ctx, "ACL", "GETUSER", string(role)).Result()
		if err != nil || got == nil {
			t.Fatalf("the server started with the redis.conf line has no user %s: %v %v", role, got, err)
		}
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: string(role), Password: "conf-password"})
		if err := c.Ping(ctx).Err(); err != nil {
			t.Errorf("%s from the redis.conf line: PING: %v", role, err)
		}
		_ = c.Close()
		l, _ := redisacl.RoleLine(lines, role)
		setUser(t, admin, string(role)+"-setuser", "pw", l.Rules())
	}
	setUser(t, admin, "sg-instance-demo", "pw", roleRules(t, lines, redisacl.Instance), demoRules(t, lines))
}

// adminClient is a client of the default user whose connections the
// recording leaves out: their local addresses are noted as they are dialled.
func adminClient(t *testing.T, srv *redistest.Srv) (*redis.Client, func(string) bool) {
	var mu sync.Mutex
	mine := map[string]bool{}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			mu.Lock()
			mine[conn.LocalAddr().String()] = true
			mu.Unlock()
		}
		return conn, err
	}})
	t.Cleanup(func() { _ = c.Close() })
	return c, func(client string) bool {
		mu.Lock()
		defer mu.Unlock()
		return mine[client]
	}
}

// shortDir is a directory with a path short enough for a unix socket.
func shortDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "acl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// run runs sgctl to its end and returns its exit code and output.
func run(t *testing.T, sgctl string, env []string, args ...string) (int, string) {
	t.Helper()
	p := proctest.Start(t, proctest.Cmd{Bin: sgctl, Name: "sgctl " + args[0], Args: args, Env: env, Timeout: time.Minute})
	return p.Wait(t), p.Output()
}

// get fetches url and fails the test unless it answers 200.
func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}

// firstEvent reads /events from url until its first transition.
func firstEvent(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "event: transition") {
			return
		}
	}
	t.Fatalf("%s: no transition: %v", url, sc.Err())
}

// dashboard starts sgctl dashboard and returns its base URL.
func dashboard(t *testing.T, sgctl string, env []string, args ...string) (*proctest.Proc, string) {
	t.Helper()
	p := proctest.Start(t, proctest.Cmd{Bin: sgctl, Name: "dashboard", Args: append([]string{"dashboard", "--listen", "127.0.0.1:0"}, args...), Env: env})
	return p, p.WaitForMatch(t, regexp.MustCompile(`serving (http://127\.0\.0\.1:\d+/)`))[1]
}

// stop sends SIGINT and wants exit 0.
func stop(t *testing.T, p *proctest.Proc) {
	t.Helper()
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t); code != 0 {
		t.Fatalf("%s: exit %d", p.Name(), code)
	}
}

// waitRecorded polls the recording until a command matches.
func waitRecorded(t *testing.T, m *redistest.Monitor, what string, match func(redistest.Command) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cmds, err := m.Commands()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(cmds, match) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recorded within 20s: %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// access is what a key rule must grant: read, write, or either (a command
// that touches a key without reading or changing its value, as TYPE).
type access struct{ read, write, either bool }

// keyAccess asks the server which keys cmd touches and how (COMMAND
// GETKEYSANDFLAGS), and turns the flags into what a key rule must grant,
// as Redis's ACL does: "access" needs read; "insert", "update" and
// "delete" need write.
func keyAccess(ctx context.Context, admin *redis.Client, args []string) (map[string]access, error) {
	if len(args) < 2 {
		return nil, nil // PING, MULTI, EXEC: no keys
	}
	q := []any{"COMMAND", "GETKEYSANDFLAGS"}
	for _, a := range args {
		q = append(q, a)
	}
	v, err := admin.Do(ctx, q...).Slice()
	if err != nil {
		if strings.Contains(err.Error(), "no key arguments") || strings.Contains(err.Error(), "Invalid arguments") {
			return nil, nil
		}
		return nil, err
	}
	out := map[string]access{}
	for _, kv := range v {
		pair, _ := kv.([]any)
		if len(pair) != 2 {
			continue
		}
		key, _ := pair[0].(string)
		flags, _ := pair[1].([]any)
		a := out[key]
		for _, f := range flags {
			switch f {
			case "access":
				a.read = true
			case "insert", "update", "delete":
				a.write = true
			}
		}
		a.either = !a.read && !a.write
		out[key] = a
	}
	return out, nil
}

// allowedWithout is what a workload leaves out although the role needs it,
// and why: a rule the check below would call unused otherwise.
var allowedWithout = map[string]string{
	"sg-instance ~sg:control:nonce:* read": "a GET of the nonce claim, only when the reply of its SET NX was lost and the entry is read again",
}

// Every command each role's workload sends (recorded by MONITOR while the
// workload ran as the default user) is one its line grants (ACL DRYRUN as
// the role's user), and every rule of the line is used by the workload:
// the line grants what its role needs and nothing more. -v prints what each
// role sent: the lists of docs/redis-acl.md.
//
//	sg-instance: a demo process that boots, heartbeats, is pulled,
//	  restarted by sgctl's rollout and by an op with max_unavailable 1 (the
//	  slots), signed, and stops (the demo's own INCR comes under the
//	  document's rule for it);
//	sg-reader: sgctl ps, ps --json, watch, diagram, the dashboard with
//	  --read-only (its pages, /api/fleet, /events resumed from 0-0), a
//	  registry.Watcher and a balancer;
//	sg-operator: sgctl pull and restart --max-unavailable 1 with --wait,
//	  a restart op with max_unavailable 1 as older tools sent it, and the
//	  dashboard with its actions (the permission check, an
//	  instance page, a pull followed to its end).
func TestEachRoleIsGrantedWhatItsWorkloadSendsAndNothingMore(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo, sgctl and the dashboard against a real redis-server")
	}
	lines := docLines(t)
	sock := filepath.Join(shortDir(t), "r.sock")
	srv := redistest.Server(t, "--unixsocket", sock, "--unixsocketperm", "700")
	admin, isAdmin := adminClient(t, srv)
	ctx := t.Context()
	users := map[redisacl.Role]string{redisacl.Instance: "sg-instance-demo", redisacl.Reader: "sg-reader", redisacl.Operator: "sg-operator"}
	setUser(t, admin, users[redisacl.Instance], "pw", roleRules(t, lines, redisacl.Instance), demoRules(t, lines))
	setUser(t, admin, users[redisacl.Reader], "pw", roleRules(t, lines, redisacl.Reader))
	setUser(t, admin, users[redisacl.Operator], "pw", roleRules(t, lines, redisacl.Operator))
	// An index member whose entry is missing: listings look at its key's type.
	if err := admin.ZAdd(ctx, registry.IndexKey("demo"), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: "ghost"}).Err(); err != nil {
		t.Fatal(err)
	}
	demoBin := proctest.Build(t, proctest.Module+"/cmd/demo")
	sgctl := proctest.Build(t, proctest.Module+"/cmd/sgctl")
	quiet := []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}
	// The instance talks over TCP, the readers and operators over the unix
	// socket: MONITOR names the connection each command came by.
	viaSocket := append([]string{"REDIS_URL=unix://" + sock, "SG_SERVICE_TTL=3s"}, quiet...)
	operator := append(slices.Clone(viaSocket), "SG_CONTROL_KEY="+controlKey)

	rec := srv.Monitor(t)
	// mark returns the position of a command the admin sends now: MONITOR
	// reports commands in the order they ran, so every command of a
	// workload that ended before it comes before it.
	mark := func(name string) int {
		if err := admin.Echo(ctx, name).Err(); err != nil {
			t.Fatal(err)
		}
		waitRecorded(t, rec, "the mark "+name, func(c redistest.Command) bool {
			return len(c.Args) == 2 && c.Name() == "echo" && c.Args[1] == name
		})
		cmds, _ := rec.Commands()
		return slices.IndexFunc(cmds, func(c redistest.Command) bool {
			return len(c.Args) == 2 && c.Name() == "echo" && c.Args[1] == name
		})
	}

	demo := proctest.Start(t, proctest.Cmd{Bin: demoBin, Name: "demo", Env: append([]string{"REDIS_URL=" + srv.URL(),
		"SG_SERVICE_NAME=demo", "SG_INSTANCE_ID=d1", "SG_CONTROL_KEY=" + controlKey, "SG_SERVICE_TTL=3s",
		"SG_HEALTH_PORT=0", "SG_HEALTH_HOST=127.0.0.1", "SG_BOOT_JITTER=0", "SG_ADVERTISE_ADDR=127.0.0.1:9"}, quiet...)})
	demo.WaitFor(t, "boot completed")
	waitRecorded(t, rec, "a heartbeat of d1", func(c redistest.Command) bool {
		return c.Client == "lua" && c.Name() == "pexpire" && strings.HasPrefix(c.Args[1], "sg:registry:service:")
	})

	// sg-reader
	for _, args := range [][]string{{"ps"}, {"ps", "demo", "--json"}, {"diagram"}} {
		if code, out := run(t, sgctl, viaSocket, args...); code != 0 {
			t.Fatalf("sgctl %s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
	}
	watch := proctest.Start(t, proctest.Cmd{Bin: sgctl, Name: "sgctl watch", Args: []string{"watch", "--from", "0"}, Env: viaSocket})
	watch.WaitFor(t, "d1")
	stop(t, watch)
	dash, base := dashboard(t, sgctl, viaSocket, "--read-only")
	for _, path := range []string{"", "service?name=demo", "instance?service=demo&id=d1", "instance/waterfall?service=demo&id=d1", "api/fleet"} {
		get(t, base+path)
	}
	firstEvent(t, base+"events?after=0-0")
	stop(t, dash)
	sc := redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	w, err := registry.New(sc).Watch("demo")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if in, err := balancer.New(w).Pick(); err != nil || in.Instance != "d1" {
		t.Fatalf("the balancer picked %+v, %v; want d1", in, err)
	}
	_ = w.Close()
	_ = sc.Close()
	readerEnd := mark("readers done")

	// sg-operator
	for _, args := range [][]string{{"pull", "demo", "--wait", "--timeout", "30s"}, {"restart", "demo", "--max-unavailable", "1", "--wait", "--timeout", "30s"}} {
		if code, out := run(t, sgctl, operator, args...); code != 0 {
			t.Fatalf("sgctl %s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
	}
	// A restart as older tools sent it: one op for every instance, whose
	// max_unavailable the instances enforce with their slots (sgctl now runs
	// a rolling restart itself; the daemons still honour such ops).
	oc := redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	client := controlops.NewClient(oc, []byte(controlKey))
	op, err := client.Send(ctx, "demo", controlops.OpRestart, controlops.TargetAll, controlops.RestartArgs{MaxUnavailable: 1})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	final, err := client.Wait(wctx, "demo", op, []string{"d1"}, nil)
	cancel()
	_ = oc.Close()
	if err != nil || final["d1"].Status != controlops.StatusDone {
		t.Fatalf("a restart with max_unavailable 1: %+v, %v", final, err)
	}
	dash, base = dashboard(t, sgctl, operator)
	if page := get(t, base); strings.Contains(page, "Actions are off") {
		t.Fatalf("the dashboard of the default user says its actions are off:\n%s", page)
	}
	get(t, base+"instance?service=demo&id=d1") // the entry whole (GET)
	postPull(t, base)
	firstEvent(t, base+"events?after=0-0")
	stop(t, dash)
	operatorEnd := mark("operators done")

	if err := demo.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := demo.Wait(t); code != 0 {
		t.Fatalf("demo: exit %d", code)
	}
	mark("the demo stopped") // everything it sent is read
	rec.Stop()
	cmds, err := rec.Commands()
	if err != nil {
		t.Fatal(err)
	}

	sent := map[redisacl.Role][]redistest.Command{}
	for i, c := range cmds {
		switch {
		case isAdmin(c.Client):
		case c.Client == "lua" || strings.HasPrefix(c.Client, "127.0.0.1:"):
			sent[redisacl.Instance] = append(sent[redisacl.Instance], c)
		case strings.HasPrefix(c.Client, "unix:") && i < readerEnd:
			sent[redisacl.Reader] = append(sent[redisacl.Reader], c)
		case strings.HasPrefix(c.Client, "unix:") && i < operatorEnd:
			sent[redisacl.Operator] = append(sent[redisacl.Operator], c)
		default:
			t.Errorf("a command from %s after the workloads: %q", c.Client, c.Args)
		}
	}
	for _, role := range redisacl.Roles {
		checkRole(t, admin, role, users[role], sent[role], lines)
	}
}

// postPull sends a pull to demo through the dashboard, as its page does
// (with the CSRF token the fleet page carries), and reads its progress to
// the summary.
func postPull(t *testing.T, base string) {
	t.Helper()
	page, err := http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	_ = page.Body.Close()
	m := regexp.MustCompile(`"csrf":"([^"]+)"`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("GET /: %s, no CSRF token in the page", page.Status)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"api/op", strings.NewReader(`{"service":"demo","instance":"d1","op":"pull"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", string(m[1]))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"type":"summary","ok":true`) && !strings.Contains(string(b), `"ok":true`) {
		t.Fatalf("POST /api/op: %s\n%s", resp.Status, b)
	}
}

// noRule are the commands Redis lets every authenticated user run: a
// connection's HELLO and AUTH.
var noRule = map[string]bool{"hello": true, "auth": true}

// checkRole checks what role's workload sent against the role's line.
func checkRole(t *testing.T, admin *redis.Client, role redisacl.Role, user string, sent []redistest.Command, lines []redisacl.Line) {
	t.Helper()
	ctx := t.Context()
	granted := map[string]bool{}
	var keyRules []string
	rules := redisacl.Rules(role)
	if role == redisacl.Instance {
		rules = append(rules, demoRules(t, lines)...)
	}
	for _, r := range rules {
		if strings.HasPrefix(r, "+") {
			granted[r[1:]] = false
		} else {
			keyRules = append(keyRules, r)
		}
	}
	used := map[string]access{}
	seen := map[string]bool{}
	byName := map[string]int{}
	for _, c := range sent {
		name := c.Name()
		byName[name]++
		if noRule[name] {
			continue
		}
		if _, ok := granted[name]; !ok {
			t.Errorf("%s sent %q, which its line does not grant", role, c.Args)
			continue
		}
		granted[name] = true
		// One check per command and keys (values and ids vary).
		acc, err := keyAccess(ctx, admin, c.Args)
		if err != nil {
			t.Fatalf("COMMAND GETKEYSANDFLAGS %q: %v", c.Args, err)
		}
		sig := name + " " + strings.Join(slices.Sorted(maps.Keys(acc)), " ")
		if seen[sig] {
			continue
		}
		seen[sig] = true
		q := []any{"ACL", "DRYRUN", user}
		for _, a := range c.Args {
			q = append(q, a)
		}
		if res, err := admin.Do(ctx, q...).Text(); err != nil || res != "OK" {
			t.Errorf("%s may not run %q: %s %v", role, c.Args, res, err)
		}
		for key, a := range acc {
			rule := ""
			for _, r := range keyRules {
				if _, pat, _ := strings.Cut(r, "~"); redisacl.Match(pat, key) {
					rule = r
					break
				}
			}
			u := used[rule]
			u.read, u.write, u.either = u.read || a.read, u.write || a.write, u.either || a.either
			used[rule] = u
		}
	}
	for name, ok := range granted {
		if !ok {
			t.Errorf("%s's line grants +%s, which its workload never sent", role, name)
		}
	}
	for _, r := range keyRules {
		perm, _, _ := strings.Cut(r, "~")
		u := used[r]
		need := map[string]bool{"read": perm == "" || strings.Contains(perm, "R"), "write": perm == "" || strings.Contains(perm, "W")}
		got := map[string]bool{"read": u.read, "write": u.write}
		for what := range need {
			if need[what] && !got[what] && allowedWithout[string(role)+" "+r+" "+what] == "" {
				if u.either && !u.read && !u.write {
					continue // only commands that need either
				}
				t.Errorf("%s's rule %s grants %s, which its workload never needed", role, r, what)
			}
		}
	}
	names := slices.Sorted(maps.Keys(byName))
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, " %s×%d", n, byName[n])
	}
	t.Logf("%s sent%s", role, b.String())
	for _, r := range keyRules {
		u := used[r]
		t.Logf("%s %s: read %v, write %v, neither (TYPE) %v", role, r, u.read, u.write, u.either)
	}
}
