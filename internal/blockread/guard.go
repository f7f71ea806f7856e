package blockread

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ErrTooLarge is matched (errors.Is) by the error a guarded client's command
// returns when its reply was refused: a bulk string, an aggregate or a whole
// reply larger than the guard allows, or a line longer than it allows. The
// connection is closed; nothing past the refused header reached go-redis.
var ErrTooLarge = errors.New("blockread: reply too large")

// TooLargeError says what the guard refused. It matches ErrTooLarge.
type TooLargeError struct {
	// What is "bulk string", "aggregate", "reply" or "line".
	What string
	// Size is the bulk string's length in bytes or the aggregate's number of
	// elements, as its header declared; for a reply or a line, the bytes
	// read when the limit was passed.
	Size int64
	// Limit is the guard's limit for What.
	Limit int64

	trail []trailFrame // the aggregates open when the guard refused, outermost first
}

// trailFrame is an aggregate that was open when the guard refused a reply:
// enough for a reader to tell which stream entry it was reading.
type trailFrame struct {
	typ   byte   // '*', '%', ...
	n     int64  // its elements, as declared (a map's keys and values)
	index int64  // the element in progress: those before it are complete
	first string // its first element, when that is a bulk string of at most maxFirst bytes
}

func (e *TooLargeError) Error() string {
	unit := "bytes"
	if e.What == "aggregate" {
		unit = "elements"
	}
	return fmt.Sprintf("blockread: %s of %d %s exceeds the limit of %d: reply refused unread, connection closed", e.What, e.Size, unit, e.Limit)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// errMalformed: the guard cannot follow the reply stream; it fails closed.
var errMalformed = errors.New("blockread: malformed reply")

// guardLimits bound one reply as it passes the guard.
type guardLimits struct {
	bulk      int64 // bytes of one bulk string ($, !, =)
	aggregate int64 // elements of one aggregate (*, ~, >; a map or an attribute counts its keys and values)
	reply     int64 // bytes of one top-level reply, headers included
	line      int64 // bytes of one header or simple line
}

// guardConn passes the bytes of a RESP2 or RESP3 reply stream to go-redis as
// it reads them, following their structure (the header lines only: bulk
// payloads are counted, not looked at). A Read whose bytes would complete
// the header of a bulk string or an aggregate larger than the limits, or
// take a reply past its byte budget, returns a *TooLargeError instead, and
// every later Read the same error: go-redis never sees the header, so never
// allocates what it declares (go-redis v9 allocates a bulk string's whole
// length as soon as it has read its header, internal/proto/reader.go). The
// connection underneath is closed at once, so Redis stops sending.
type guardConn struct {
	net.Conn
	p   parser
	err error
}

// guardSyscallConn is a guardConn over a connection that has a raw file
// descriptor: go-redis's pool peeks at it (MSG_PEEK, nothing consumed) to
// find connections the server closed while they were idle.
type guardSyscallConn struct{ *guardConn }

func (c guardSyscallConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// guard wraps conn.
func guard(conn net.Conn, lim guardLimits) net.Conn {
	g := &guardConn{Conn: conn, p: parser{lim: lim}}
	if _, ok := conn.(syscall.Conn); ok {
		return guardSyscallConn{g}
	}
	return g
}

func (c *guardConn) Read(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		if perr := c.p.feed(b[:n]); perr != nil {
			c.err = perr
			_ = c.Conn.Close() // Redis stops writing; go-redis drops the connection
			return 0, perr
		}
	}
	return n, err
}

// parser follows a RESP reply stream fed to it in pieces of any size. It
// keeps a few integers and a stack of open aggregates, never the data.
type parser struct {
	lim guardLimits

	inLine  bool  // within a line: its type byte was read
	typ     byte  // the line's type byte
	num     int64 // the length read so far on a length line
	neg     bool  // the length line began with '-'
	bad     bool  // the length line holds something that is not a length
	lineLen int64 // bytes of the line after its type byte

	skip  int64   // bytes of a bulk payload (and its CRLF) still to pass
	stack []frame // open aggregates, innermost last
	reply int64   // bytes of the current top-level reply so far

	capture bool  // the bulk being passed is the first element of the innermost aggregate, kept
	capLen  int64 // its length
	capGot  int   // its bytes kept so far
}

type frame struct {
	left   int64 // elements still to come
	n      int64 // elements declared
	typ    byte
	attr   bool // an attribute (|): it precedes an element and is not one
	firstN int  // the length of first, -1 until the first element is a complete short bulk
	first  [maxFirst]byte
}

// maxFirst bounds the first element an aggregate keeps for the trail: a
// stream entry's id is at most 41 bytes.
const maxFirst = 64

// maxDeclared bounds a length before it is compared with the limits, so the
// arithmetic cannot overflow.
const maxDeclared = 1 << 50

func lengthLine(t byte) bool {
	switch t {
	case '$', '!', '=', '*', '~', '>', '%', '|':
		return true
	}
	return false
}

// feed follows b; it returns an error when the stream must be refused.
func (p *parser) feed(b []byte) error {
	for i := 0; i < len(b); {
		if p.skip > 0 {
			k := min(p.skip, int64(len(b)-i))
			if p.capture {
				top := &p.stack[len(p.stack)-1]
				want := int(p.capLen) - p.capGot // the payload, not its CRLF
				p.capGot += copy(top.first[p.capGot:p.capLen], b[i:i+min(int(k), max(want, 0))])
			}
			p.skip -= k
			i += int(k)
			p.reply += k
			if p.reply > p.lim.reply {
				return p.refuse("reply", p.reply, p.lim.reply)
			}
			if p.skip == 0 {
				if p.capture {
					p.stack[len(p.stack)-1].firstN = int(p.capLen)
					p.capture = false
				}
				p.element()
			}
			continue
		}
		c := b[i]
		i++
		p.reply++
		if !p.inLine {
			p.inLine, p.typ, p.num, p.neg, p.bad, p.lineLen = true, c, 0, false, false, 0
			continue
		}
		switch {
		case c == '\n':
			p.inLine = false
			if err := p.endLine(); err != nil {
				return err
			}
			if p.reply > p.lim.reply {
				return p.refuse("reply", p.reply, p.lim.reply)
			}
			continue
		case c == '\r':
			continue
		}
		p.lineLen++
		if p.lineLen > p.lim.line {
			return p.refuse("line", p.lineLen, p.lim.line)
		}
		if !lengthLine(p.typ) {
			continue
		}
		switch {
		case c >= '0' && c <= '9':
			if p.num < maxDeclared {
				p.num = p.num*10 + int64(c-'0')
			}
		case c == '-' && p.lineLen == 1:
			p.neg = true
		default:
			p.bad = true // "?" (streamed, never sent by Redis) or garbage
		}
	}
	return nil
}

// endLine acts on a complete line.
func (p *parser) endLine() error {
	if lengthLine(p.typ) {
		if p.bad || p.lineLen == 0 || p.neg && p.num != 1 {
			return fmt.Errorf("%w: length line of type %q", errMalformed, p.typ)
		}
		if p.neg { // $-1, *-1: RESP2 null
			p.element()
			return nil
		}
	}
	switch p.typ {
	case '$', '!', '=':
		if p.num > p.lim.bulk {
			return p.refuse("bulk string", p.num, p.lim.bulk)
		}
		p.skip = p.num + 2
		if top := len(p.stack) - 1; top >= 0 && p.stack[top].left == p.stack[top].n && p.num <= maxFirst {
			p.capture, p.capLen, p.capGot = true, p.num, 0
		}
	case '*', '~', '>', '%', '|':
		n := p.num
		if p.typ == '%' || p.typ == '|' {
			n *= 2
		}
		if n > p.lim.aggregate {
			return p.refuse("aggregate", n, p.lim.aggregate)
		}
		if n == 0 {
			if p.typ != '|' {
				p.element()
			}
			return nil
		}
		p.stack = append(p.stack, frame{left: n, n: n, typ: p.typ, attr: p.typ == '|', firstN: -1})
	case '+', '-', ':', ',', '#', '(', '_':
		p.element()
	default:
		return fmt.Errorf("%w: unknown type %q", errMalformed, p.typ)
	}
	return nil
}

// refuse returns the error that refuses the reply, with the trail of the
// aggregates open now.
func (p *parser) refuse(what string, size, limit int64) error {
	e := &TooLargeError{What: what, Size: size, Limit: limit, trail: make([]trailFrame, len(p.stack))}
	for i, f := range p.stack {
		e.trail[i] = trailFrame{typ: f.typ, n: f.n, index: f.n - f.left}
		if f.firstN >= 0 {
			e.trail[i].first = string(f.first[:f.firstN])
		}
	}
	return e
}

// element records a complete element: it closes the aggregates it
// completes, and the reply when none is left open.
func (p *parser) element() {
	for len(p.stack) > 0 {
		top := &p.stack[len(p.stack)-1]
		top.left--
		if top.left > 0 {
			return
		}
		attr := top.attr
		p.stack = p.stack[:len(p.stack)-1]
		if attr {
			return // the attribute is done; the element it annotates follows
		}
	}
	p.reply = 0
}
