package redisacl_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stargazer/lifecycle/fleetenv"
)

// fakeRedis is a server that speaks just enough RESP for a go-redis
// connection's setup and a PING, and refuses every CLIENT subcommand with
// NOPERM, as a Redis 7.2 server does for a user without +client|setinfo.
// Redis 7.0, the tests' redis-server, has neither CLIENT SETINFO nor CLIENT
// MAINT_NOTIFICATIONS: its "unknown subcommand" error takes the same path in
// go-redis, an error reply.
type fakeRedis struct {
	ln net.Listener
	wg sync.WaitGroup

	mu   sync.Mutex
	cmds [][]string
}

func startFakeRedis(t *testing.T) *fakeRedis {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRedis{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() { defer f.wg.Done(); f.serve(conn) }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeRedis) serve(conn net.Conn) {
	defer conn.Close()
	rd := bufio.NewReader(conn)
	for {
		args, err := readCommand(rd)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.cmds = append(f.cmds, args)
		f.mu.Unlock()
		var reply string
		switch name := strings.ToUpper(args[0]); {
		case name == "HELLO":
			reply = "%3\r\n+server\r\n+redis\r\n+version\r\n+7.2.0\r\n+proto\r\n:3\r\n"
		case name == "CLIENT" && len(args) > 1:
			reply = "-NOPERM User sg-instance has no permissions to run the 'client|" + strings.ToLower(args[1]) + "' command\r\n"
		case name == "PING":
			reply = "+PONG\r\n"
		default:
			reply = fmt.Sprintf("-ERR unknown command '%s'\r\n", args[0])
		}
		if _, err := io.WriteString(conn, reply); err != nil {
			return
		}
	}
}

// readCommand reads one RESP array of bulk strings.
func readCommand(rd *bufio.Reader) ([]string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "*")))
	if err != nil || !strings.HasPrefix(line, "*") {
		return nil, fmt.Errorf("not an array: %q", line)
	}
	args := make([]string, 0, n)
	for range n {
		head, err := rd.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
		if err != nil {
			return nil, fmt.Errorf("not a bulk string: %q", head)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return nil, err
		}
		args = append(args, string(buf[:size]))
	}
	return args, nil
}

// go-redis v9 (as fleetenv.NewRedisClient builds it) sends, on every new
// connection, HELLO 3 with AUTH, CLIENT MAINT_NOTIFICATIONS ON (its "auto"
// mode: a refusal turns the feature off) and two CLIENT SETINFO, and
// ignores an error reply to all but HELLO (it fails the connection only when
// the server does not answer): a user without +client|setinfo connects, as
// docs/redis-acl.md says.
func TestGoRedisConnectsWhenClientSetInfoIsRefused(t *testing.T) {
	f := startFakeRedis(t)
	c, err := fleetenv.NewRedisClient("redis://sg-instance:secret@" + f.ln.Addr().String() + "/0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING through a connection whose CLIENT SETINFO was refused: %v", err)
	}
	f.mu.Lock()
	cmds := slices.Clone(f.cmds)
	f.mu.Unlock()
	var sent []string
	for _, a := range cmds {
		if strings.EqualFold(a[0], "HELLO") {
			for i := range a {
				if i > 0 && strings.EqualFold(a[i-1], "AUTH") {
					a[i+1] = "(password)"
				}
			}
		}
		sent = append(sent, strings.Join(a, " "))
	}
	t.Logf("a new connection sent: %q", sent)
	want := []string{"HELLO 3 AUTH SG-INSTANCE (PASSWORD)", "CLIENT MAINT_NOTIFICATIONS ON", "CLIENT SETINFO LIB-NAME GO-REDIS", "CLIENT SETINFO LIB-VER", "PING"}
	if len(sent) != len(want) {
		t.Fatalf("sent %q, want %d commands: %q", sent, len(want), want)
	}
	for i, w := range want {
		if !strings.HasPrefix(strings.ToUpper(sent[i]), w) {
			t.Errorf("command %d: %q, want %q...", i+1, sent[i], w)
		}
	}
}
