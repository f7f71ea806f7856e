package blockread

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"
)

var testGuard = guardLimits{bulk: 100, aggregate: 10, reply: 1000, line: 64}

// Replies a Redis 7 sends, RESP2 and RESP3, every type the parser knows.
var validReplies = []string{
	"+OK\r\n",
	"-ERR unknown command 'x'\r\n",
	":42\r\n", ":-7\r\n",
	"$5\r\nhello\r\n", "$0\r\n\r\n", "$-1\r\n", "*-1\r\n", "_\r\n",
	",3.14\r\n", "#t\r\n", "(3492890328409238509324850943850943825024385\r\n",
	"!21\r\nSYNTAX invalid syntax\r\n", "=15\r\ntxt:Some string\r\n",
	"*0\r\n", "%0\r\n", "~0\r\n",
	"*2\r\n$3\r\nfoo\r\n*2\r\n:1\r\n$-1\r\n",
	// XREAD in RESP3: a map of stream name to entries [id, [field, value...]].
	"%1\r\n$1\r\ns\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$0\r\n\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n",
	// An attribute before a reply, at the top and inside an array.
	"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:1\r\n:2\r\n",
	"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n",
	// A push between replies.
	">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
	"~2\r\n+a\r\n+b\r\n",
}

// The parser follows valid replies however they are cut, and is back at the
// start of a reply after each one.
func TestTheGuardFollowsValidRepliesCutAnywhere(t *testing.T) {
	all := strings.Join(validReplies, "")
	for seed := range 200 {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		p := parser{lim: testGuard}
		for rest := []byte(all); len(rest) > 0; {
			n := 1 + rng.IntN(min(len(rest), 40))
			if err := p.feed(rest[:n]); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			rest = rest[n:]
		}
		if p.inLine || p.skip != 0 || len(p.stack) != 0 || p.reply != 0 {
			t.Fatalf("seed %d: not at a reply boundary after the replies: %+v", seed, p)
		}
	}
}

// chunks is a net.Conn whose reads return the given pieces, one per Read.
type chunks struct {
	net.Conn
	parts  [][]byte
	closed bool
}

func (c *chunks) Read(b []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(b, c.parts[0])
	c.parts[0] = c.parts[0][n:]
	if len(c.parts[0]) == 0 {
		c.parts = c.parts[1:]
	}
	return n, nil
}

func (c *chunks) Close() error                     { c.closed = true; return nil }
func (c *chunks) SetReadDeadline(time.Time) error  { return nil }
func (c *chunks) SetWriteDeadline(time.Time) error { return nil }

// readAll reads g until an error, returning what it handed over.
func readAll(g net.Conn) ([]byte, error) {
	var got bytes.Buffer
	buf := make([]byte, 7)
	for {
		n, err := g.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			return got.Bytes(), err
		}
	}
}

// What the guard refuses, wherever the refused header is cut: the reader
// never receives the end of its line, so go-redis never acts on it, and the
// connection is closed.
func TestTheGuardRefusesBeforeTheReaderSeesTheHeader(t *testing.T) {
	for _, tc := range []struct {
		name, head, refused string
		what                string
		size                int64
	}{
		{"bulk over the limit", "*2\r\n$2\r\nid\r\n", "$101\r\n", "bulk string", 101},
		{"blob error over the limit", "", "!200\r\n", "bulk string", 200},
		{"verbatim over the limit", "*1\r\n", "=101\r\n", "bulk string", 101},
		{"array over the limit", "*2\r\n$2\r\nid\r\n", "*11\r\n", "aggregate", 11},
		{"map over the limit (keys and values)", "", "%6\r\n", "aggregate", 12},
		{"a 100 MB field", "%1\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$4\r\nargs\r\n", "$104857600\r\n", "bulk string", 104857600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := tc.head + tc.refused + strings.Repeat("x", 300)
			for cut := 1; cut < len(stream); cut++ {
				c := &chunks{parts: [][]byte{[]byte(stream[:cut]), []byte(stream[cut:])}}
				got, err := readAll(guard(c, testGuard))
				var tl *TooLargeError
				if !errors.As(err, &tl) || !errors.Is(err, ErrTooLarge) || tl.What != tc.what || tl.Size != tc.size {
					t.Fatalf("cut at %d: %v, want a %s of %d refused", cut, err, tc.what, tc.size)
				}
				if bytes.Contains(got, []byte(tc.refused)) {
					t.Fatalf("cut at %d: the reader got the whole refused header %q: %q", cut, tc.refused, got)
				}
				if !c.closed {
					t.Fatalf("cut at %d: the connection was not closed", cut)
				}
			}
		})
	}
}

func TestTheGuardRefusesAReplyPastItsBudgetAndALongLine(t *testing.T) {
	var many strings.Builder
	many.WriteString("*10\r\n")
	for range 10 {
		many.WriteString("$100\r\n" + strings.Repeat("y", 100) + "\r\n")
	}
	_, err := readAll(guard(&chunks{parts: [][]byte{[]byte(many.String())}}, testGuard))
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.What != "reply" || tl.Limit != 1000 {
		t.Fatalf("10 bulks of 100 bytes: %v, want the reply refused at 1000 bytes", err)
	}
	_, err = readAll(guard(&chunks{parts: [][]byte{[]byte("-ERR " + strings.Repeat("z", 100) + "\r\n")}}, testGuard))
	if !errors.As(err, &tl) || tl.What != "line" {
		t.Fatalf("a 105-byte error line: %v, want the line refused", err)
	}
	// Each reply has its own budget: ten replies of 600 bytes pass.
	one := "$590\r\n" + strings.Repeat("w", 590) + "\r\n"
	lim := testGuard
	lim.bulk = 1000
	if _, err := readAll(guard(&chunks{parts: [][]byte{[]byte(strings.Repeat(one, 10))}}, lim)); !errors.Is(err, io.EOF) {
		t.Fatalf("ten replies of 600 bytes: %v, want them all passed", err)
	}
}

func TestTheGuardFailsClosedOnWhatItCannotFollow(t *testing.T) {
	for _, s := range []string{"$?\r\n;4\r\nabcd\r\n;0\r\n", "$abc\r\n", "*-2\r\n", "$\r\n", "@1\r\n"} {
		_, err := readAll(guard(&chunks{parts: [][]byte{[]byte(s)}}, testGuard))
		if !errors.Is(err, errMalformed) {
			t.Errorf("%q: %v, want it refused as malformed", s, err)
		}
	}
}
