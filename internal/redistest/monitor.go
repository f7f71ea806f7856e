package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Command is one command a server executed, as MONITOR reports it.
type Command struct {
	// DB is the database it ran in.
	DB int
	// Client is who sent it: "127.0.0.1:port", "unix:/path/to.sock", or
	// "lua" for a command a script ran (reported before the script's own
	// EVAL or EVALSHA line, in the order Redis ran them).
	Client string
	// Args are the command and its arguments, as sent ("xadd" in the case
	// the client used).
	Args []string
}

// Name returns the command's name in lower case, with its subcommand for
// the container commands (CLIENT, CONFIG, ACL, CLUSTER, ...): "xadd",
// "client|setinfo", as ACL rules write them.
func (c Command) Name() string {
	if len(c.Args) == 0 {
		return ""
	}
	name := strings.ToLower(c.Args[0])
	switch name {
	case "client", "config", "acl", "cluster", "command", "memory", "object", "script", "xinfo", "function", "latency", "module", "slowlog", "xgroup", "pubsub":
		if len(c.Args) > 1 {
			name += "|" + strings.ToLower(c.Args[1])
		}
	}
	return name
}

// Monitor records every command the server executes (MONITOR, on a
// connection of its own, as the default user) until Stop. Commands Redis
// refuses (unknown, wrong arity, NOPERM) are not reported: MONITOR shows
// what ran.
type Monitor struct {
	conn net.Conn
	done chan struct{}

	mu   sync.Mutex
	cmds []Command
	err  error
}

// Monitor starts recording; the test's cleanup stops it. It returns once
// the server confirmed MONITOR, so every command sent after it is recorded.
func (s *Srv) Monitor(tb testing.TB) *Monitor {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		tb.Fatalf("redistest: monitor: %v", err)
	}
	m := &Monitor{conn: conn, done: make(chan struct{})}
	rd := bufio.NewReader(conn)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		conn.Close()
		tb.Fatalf("redistest: monitor: %v", err)
	}
	if line, err := rd.ReadString('\n'); err != nil || strings.TrimSpace(line) != "+OK" {
		conn.Close()
		tb.Fatalf("redistest: monitor: got %q, %v", line, err)
	}
	_ = conn.SetDeadline(time.Time{})
	go m.read(rd)
	tb.Cleanup(m.Stop)
	return m
}

func (m *Monitor) read(rd *bufio.Reader) {
	defer close(m.done)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.mu.Lock()
				m.err = err
				m.mu.Unlock()
			}
			return
		}
		c, err := parseMonitorLine(strings.TrimRight(line, "\r\n"))
		m.mu.Lock()
		if err != nil && m.err == nil {
			m.err = err
		}
		if err == nil {
			m.cmds = append(m.cmds, c)
		}
		m.mu.Unlock()
	}
}

// Commands returns what was recorded so far, and the first error reading or
// parsing MONITOR's output, if any.
func (m *Monitor) Commands() ([]Command, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Command(nil), m.cmds...), m.err
}

// Stop ends the recording and waits for its reader. Later calls do nothing.
func (m *Monitor) Stop() {
	_ = m.conn.Close()
	<-m.done
}

// parseMonitorLine reads `+1700000000.123456 [0 127.0.0.1:5555] "GET" "k"`.
func parseMonitorLine(line string) (Command, error) {
	var c Command
	rest, ok := strings.CutPrefix(line, "+")
	if !ok {
		return c, fmt.Errorf("redistest: monitor: unexpected line %q", line)
	}
	_, rest, _ = strings.Cut(rest, " [")
	head, rest, ok := strings.Cut(rest, "] ")
	if !ok {
		return c, fmt.Errorf("redistest: monitor: no client in %q", line)
	}
	db, client, _ := strings.Cut(head, " ")
	c.DB, _ = strconv.Atoi(db)
	c.Client = client
	for rest != "" {
		if rest[0] == ' ' {
			rest = rest[1:]
			continue
		}
		if rest[0] != '"' {
			return c, fmt.Errorf("redistest: monitor: unquoted argument in %q", line)
		}
		var b strings.Builder
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] != '\\' || i+1 >= len(rest) {
				b.WriteByte(rest[i])
				continue
			}
			i++
			switch rest[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'a':
				b.WriteByte('\a')
			case 'b':
				b.WriteByte('\b')
			case 'x':
				if i+2 < len(rest) {
					if v, err := strconv.ParseUint(rest[i+1:i+3], 16, 8); err == nil {
						b.WriteByte(byte(v))
						i += 2
						continue
					}
				}
				b.WriteByte('x')
			default:
				b.WriteByte(rest[i])
			}
		}
		if i >= len(rest) {
			return c, fmt.Errorf("redistest: monitor: unterminated argument in %q", line)
		}
		c.Args = append(c.Args, b.String())
		rest = rest[i+1:]
	}
	return c, nil
}
