package redistest

import (
	"slices"
	"testing"
	"time"
)

func TestParseMonitorLineUnquotesArgumentsAsRedisQuotesThem(t *testing.T) {
	c, err := parseMonitorLine(`+1700000000.123456 [3 lua] "SET" "a \"b\"\\c" "\x00\xff\n" "sg:control:{demo}"`)
	if err != nil {
		t.Fatal(err)
	}
	if c.DB != 3 || c.Client != "lua" || !slices.Equal(c.Args, []string{"SET", `a "b"\c`, "\x00\xff\n", "sg:control:{demo}"}) {
		t.Fatalf("parsed %+v", c)
	}
	if c, _ := parseMonitorLine(`+1.0 [0 unix:/tmp/r.sock] "client" "setinfo" "LIB-NAME" "x"`); c.Name() != "client|setinfo" || c.Client != "unix:/tmp/r.sock" {
		t.Fatalf("parsed %+v, name %q", c, c.Name())
	}
	for _, bad := range []string{"-ERR x", `+1.0 [0 lua] SET`, `+1.0 [0 lua] "SET`} {
		if _, err := parseMonitorLine(bad); err == nil {
			t.Errorf("parseMonitorLine(%q) accepted it", bad)
		}
	}
}

func TestMonitorRecordsWhatTheServerRuns(t *testing.T) {
	srv := Server(t)
	m := srv.Monitor(t)
	c := srv.Client(t)
	if err := c.Eval(t.Context(), "return redis.call('SET', KEYS[1], 'v')", []string{"k"}).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		cmds, err := m.Commands()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(cmds, func(c Command) bool { return c.Client == "lua" && c.Name() == "set" }) &&
			slices.ContainsFunc(cmds, func(c Command) bool { return c.Client != "lua" && c.Name() == "eval" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recorded %+v, want the EVAL and the SET it ran", cmds)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
	m.Stop()
	m.Stop()
}
