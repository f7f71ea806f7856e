package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/registry"
)

// slack is what a bound on this shared 2-core machine allows beyond the
// timeout it checks.
const slack = 3 * time.Second

// dial opens a raw connection to the rig, closed when the test ends.
func (r *rig) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(r.http.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedAfter reads c until the server closes it, at most until deadline,
// and returns how long after start that was; a connection still open at
// the deadline fails the test.
func closedAfter(t *testing.T, c net.Conn, start, deadline time.Time) time.Duration {
	t.Helper()
	if err := c.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	_, err := io.Copy(io.Discard, c) // nil at EOF
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection is still open %v after it started", deadline.Sub(start).Round(time.Millisecond))
	}
	// Any other error is the server closing too (a reset).
	return time.Since(start)
}

// The review's idle keep-alive and slow-body logins were still open after
// 70 s. Each kind of connection that holds a descriptor without finishing a
// request is closed by its timeout: not before it, and within slack after.
func TestIdleAndSlowConnectionsAreClosedWithinTheirTimeouts(t *testing.T) {
	lim := Limits{ReadHeaderTimeout: 400 * time.Millisecond, ReadTimeout: 900 * time.Millisecond,
		IdleTimeout: 700 * time.Millisecond, WriteTimeout: 5 * time.Second}
	r, _ := miniRig(t, func(c *Config) { c.Limits = lim })
	host := strings.TrimPrefix(r.http.URL, "http://")
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		// open starts the connection's request (if any), and returns when
		// the timeout starts.
		open func(c net.Conn) time.Time
	}{
		{"silent", lim.ReadHeaderTimeout, func(net.Conn) time.Time { return time.Now() }},
		{"slow header", lim.ReadHeaderTimeout, func(c net.Conn) time.Time {
			start := time.Now()
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n", host)
			return start
		}},
		{"idle keep-alive", lim.IdleTimeout, func(c net.Conn) time.Time {
			fmt.Fprintf(c, "GET /login HTTP/1.1\r\nHost: %s\r\n\r\n", host)
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Error(err)
				return time.Now()
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || res.Close {
				t.Errorf("GET /login: %d, close %v; want 200 and a connection kept alive", res.StatusCode, res.Close)
			}
			return time.Now()
		}},
		{"slow-body login", lim.ReadTimeout, func(c net.Conn) time.Time {
			start := time.Now()
			fmt.Fprintf(c, "POST /login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=", host)
			return start
		}},
		{"slow-body op", lim.ReadTimeout, func(c net.Conn) time.Time {
			start := time.Now()
			fmt.Fprintf(c, "POST /api/op HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"op\":", host)
			return start
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := r.dial(t)
			start := tc.open(c)
			took := closedAfter(t, c, start, start.Add(tc.timeout+slack))
			t.Logf("closed %v after it started (timeout %v)", took.Round(time.Millisecond), tc.timeout)
			if took < tc.timeout*9/10 {
				t.Errorf("closed after %v, before its timeout %v", took, tc.timeout)
			}
		})
	}
}

// The live stream and an op's progress outlive the server's read and
// write timeouts: each of their writes has its own deadline, and the
// stream gets a keep-alive comment every Limits.KeepAlive.
func TestTheLiveStreamOutlivesTheServerTimeoutsWithKeepAlives(t *testing.T) {
	lim := Limits{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond,
		KeepAlive: 200 * time.Millisecond, StreamWriteTimeout: 2 * time.Second}
	r, _ := miniRig(t, func(c *Config) { c.Limits = lim })
	c := r.dial(t)
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: %s\r\n\r\n", strings.TrimPrefix(r.http.URL, "http://"))
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(slack))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /events: %v %v", res, err)
	}
	// The body is left to c's close (closing it would read it to its end).
	body := bufio.NewReader(res.Body)
	// Ten times the server's timeouts, each line within its keep-alive and
	// slack: the stream is never cut, and keeps getting comments.
	keepAlives := 0
	for time.Since(start) < 10*lim.WriteTimeout {
		_ = c.SetReadDeadline(time.Now().Add(lim.KeepAlive + slack))
		line, err := body.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended %v after it started (%d keep-alives): %v", time.Since(start).Round(time.Millisecond), keepAlives, err)
		}
		if line == ": keep-alive\n" {
			keepAlives++
		}
	}
	if min := int(10*lim.WriteTimeout/lim.KeepAlive) / 2; keepAlives < min {
		t.Errorf("%d keep-alives in %v, want at least %d (one every %v)", keepAlives, time.Since(start), min, lim.KeepAlive)
	}
	// And it still carries transitions.
	id, err := registry.New(r.rdb).Publish(t.Context(), registry.Event{Service: "demo", Instance: "demo-1", Event: "pull", From: "running", To: "pulling"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		_ = c.SetReadDeadline(time.Now().Add(slack))
		line, err := body.ReadString('\n')
		if err != nil {
			t.Fatalf("transition %s did not arrive %v after the stream started: %v", id, time.Since(start), err)
		}
		if line == "id: "+id+"\n" {
			break
		}
	}
	t.Logf("%d keep-alives and a transition over %v, with read and write timeouts of %v", keepAlives,
		time.Since(start).Round(time.Millisecond), lim.WriteTimeout)
}

func TestAnOpIsFollowedPastTheServerTimeouts(t *testing.T) {
	const follow = 1500 * time.Millisecond
	lim := Limits{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, StreamWriteTimeout: 2 * time.Second}
	r, _ := miniRig(t, func(c *Config) { c.Limits, c.OpLimit = lim, follow })
	e := entry("demo", "demo-1", "running")
	e.Control = "insecure"
	put(t, r.rdb, e) // no daemon: the op is never answered, and followed to OpLimit
	res := r.post(t, "/api/op", "application/json", `{"service":"demo","instance":"demo-1","op":"pull"}`)
	var sum struct {
		Type    string   `json:"type"`
		Missing []string `json:"missing"`
		Seconds float64  `json:"seconds"`
	}
	lines := strings.Split(strings.TrimSpace(res.body), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil || sum.Type != "summary" {
		t.Fatalf("POST /api/op = %d, last line %q (%v): want the summary", res.code, lines[len(lines)-1], err)
	}
	if got := time.Duration(sum.Seconds * float64(time.Second)); got < follow*9/10 || len(sum.Missing) != 1 {
		t.Errorf("the op was followed %v (missing %v), want OpLimit %v past the %v timeouts", got, sum.Missing, follow, lim.WriteTimeout)
	}
}

func TestRequestBodiesOverMaxBodyAreRefused(t *testing.T) {
	r, _ := miniRig(t, func(c *Config) { c.Token = "a-token-of-at-least-16-bytes" })
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	big := strings.Repeat("x", MaxBody+1)
	if res := r.post(t, "/login", "application/x-www-form-urlencoded", "token="+big); res.code != http.StatusRequestEntityTooLarge {
		t.Errorf("POST /login of %d bytes = %d %q, want 413", len(big)+6, res.code, res.body)
	}
	op := `{"service":"demo","instance":"demo-1","op":"pull","x":"` + big + `"}`
	if res := r.post(t, "/api/op", "application/json", op, "Authorization", "Bearer a-token-of-at-least-16-bytes"); res.code/100 != 4 ||
		!strings.Contains(res.body, "too large") {
		t.Errorf("POST /api/op of %d bytes = %d %q, want a 4xx saying it is too large", len(op), res.code, res.body)
	}
	if n, _ := r.rdb.XLen(t.Context(), "sg:control:{demo}").Result(); n != 0 {
		t.Errorf("%d ops were written to the control stream", n)
	}
}

// getEvents opens GET /events with ctx and returns the response (its body
// open when the status is 200: ctx's end closes it).
func (r *rig) getEvents(t *testing.T, ctx context.Context) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.http.URL+"/events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		res.Body = io.NopCloser(strings.NewReader(string(b)))
	}
	return res
}

func TestLiveUpdateSubscribersPastTheCapGet503(t *testing.T) {
	var logs logBuffer
	r, _ := miniRig(t, func(c *Config) {
		c.Limits.MaxSubscribers = 2
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	first, closeFirst := context.WithCancel(t.Context())
	defer closeFirst()
	for i, ctx := range []context.Context{first, t.Context()} {
		if res := r.getEvents(t, ctx); res.StatusCode != http.StatusOK {
			t.Fatalf("stream %d of 2: %d, want 200", i+1, res.StatusCode)
		}
	}
	third, closeThird := context.WithCancel(t.Context())
	defer closeThird()
	res := r.getEvents(t, third)
	if res.StatusCode == http.StatusOK {
		t.Fatalf("stream 3 of 2: 200, want 503")
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "2 live streams") {
		t.Fatalf("stream 3 of 2: %d, Retry-After %q, %q; want 503 with Retry-After saying the cap",
			res.StatusCode, res.Header.Get("Retry-After"), body)
	}
	if line := logs.String(); !strings.Contains(line, "live streams at the cap") || !strings.Contains(line, "max_subscribers=2") {
		t.Errorf("no log line about the refused stream: %q", line)
	}
	// A browser that leaves frees its place.
	closeFirst()
	eventually(t, 5*time.Second, func() bool {
		// Each 200 stays open until the test ends: past 2 streams again,
		// later tries get 503.
		return r.getEvents(t, t.Context()).StatusCode == http.StatusOK
	}, func() string { return "no stream accepted after one of two closed" })
}
