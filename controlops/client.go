package controlops

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/fleetenv"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/slotmap"
)

// Span names and attributes.
const (
	SpanSend   = "controlops.send"
	SpanHandle = "controlops.handle"

	AttrOp       = attribute.Key("controlops.op")
	AttrOpID     = attribute.Key("controlops.op_id")
	AttrTarget   = attribute.Key("controlops.target")
	AttrService  = attribute.Key("controlops.service")
	AttrInstance = attribute.Key("controlops.instance")
	AttrStatus   = attribute.Key("controlops.status")
	AttrReason   = attribute.Key("controlops.reason")
	AttrKeyID    = attribute.Key("controlops.key_id")
)

// RestartArgs are the arguments of a restart op.
type RestartArgs struct {
	// MaxUnavailable, when > 0, is how many instances of the service may be out
	// of running at once because of the op: each instance takes a slot before
	// it restarts and its new process gives it back once running.
	MaxUnavailable int `json:"max_unavailable,omitempty"`
}

// Client sends ops and reads their results: the operator's side (sgctl).
// Its methods are safe for concurrent use.
type Client struct {
	rdb    redis.UniversalClient
	cfg    config
	tracer trace.Tracer
}

// NewClient returns a client that sends ops through rdb, signed with key (the
// first key of SG_CONTROL_KEY; nil or empty sends them unsigned, which only
// instances in insecure mode accept). Options that apply: WithTTL, WithClock,
// WithTracerProvider.
func NewClient(rdb redis.UniversalClient, key []byte, opts ...Option) *Client {
	cfg := newConfig(append(append([]Option{}, opts...), WithKey(key)))
	return &Client{rdb: rdb, cfg: cfg, tracer: cfg.tp.Tracer(ScopeName)}
}

// Signs reports whether the client has a key: it signs its ops, and
// believes a done only when the instance signed it with that key (Wait).
func (c *Client) Signs() bool { return len(c.cfg.keys) > 0 }

// ErrInvalidRequest: Send was given a service, op, target or args it cannot
// send. The error names which.
var ErrInvalidRequest = errors.New("controlops: invalid request")

// Send writes one op to service's stream sg:control:{<service>} and returns it,
// with StreamID set. It sets a random id and nonce, issued_at from the clock,
// ttl_ms (WithTTL, default 30s, at most MaxTTL; opts may override it for this op), the
// traceparent of a controlops.send span started as a child of ctx's span, and
// sig when the client has a key. target is "*" or an instance id. args is
// marshalled to JSON (nil sends no args; a json.RawMessage is sent as is).
// Results can be read with Wait or Results from the moment Send returns.
func (c *Client) Send(ctx context.Context, service, op, target string, args any, opts ...Option) (Op, error) {
	cfg := c.cfg
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if err := fleetenv.ValidateService(service); err != nil {
		return Op{}, fmt.Errorf("%w: service %q: %v", ErrInvalidRequest, service, err)
	}
	o := Op{Name: op, Target: target, TTL: cfg.ttl, IssuedAt: cfg.clock.Now().Truncate(time.Millisecond)}
	switch a := args.(type) {
	case nil:
	case json.RawMessage:
		o.Args = a
	default:
		b, err := json.Marshal(args)
		if err != nil {
			return Op{}, fmt.Errorf("%w: args for %q: %w", ErrInvalidRequest, op, err)
		}
		o.Args = b
	}
	var rb [28]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return Op{}, fmt.Errorf("controlops: random id: %w", err)
	}
	o.ID = hex.EncodeToString(rb[:12])
	o.Nonce = base64.RawURLEncoding.EncodeToString(rb[12:])

	ctx, span := c.tracer.Start(ctx, SpanSend, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(AttrService.String(service), AttrOp.String(op), AttrOpID.String(o.ID), AttrTarget.String(target)))
	defer span.End()
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	o.Traceparent = carrier.Get("traceparent")
	if len(c.cfg.keys) > 0 {
		o = Sign(c.cfg.keys[0], service, o)
	}
	// The daemon parses with the same rules: refuse here what it would reject.
	if _, err := Parse(o.Values()); err != nil {
		span.SetStatus(codes.Error, err.Error())
		return Op{}, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	id, err := c.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: StreamKey(service),
		MaxLen: cfg.streamMaxLen,
		Approx: true,
		Values: o.Values(),
	}).Result()
	if err != nil {
		slotmap.Reload(c.rdb, err) // so a retry finds a promoted replica
		span.SetStatus(codes.Error, err.Error())
		if perr := operatorRefusal(err, canSend, "XADD", "to", StreamKey(service)); perr != nil {
			return Op{}, fmt.Errorf("controlops: %w", perr)
		}
		return Op{}, fmt.Errorf("controlops: XADD %s: %w", StreamKey(service), err)
	}
	o.StreamID = id
	return o, nil
}

// Results reads the results stream of service after the stream ID after
// (exclusive; "0" from the start, "$" only what comes next), at most count
// (<= 0: 100). With block > 0 it waits up to block for the first result; a
// timeout returns no results and no error. Use the last Result's ID as the next
// after.
//
// Whoever can write to Redis can append results of any size: Results never
// loads one of more than MaxResultLen bytes or MaxFields fields, it leaves
// it out. It reads through a guarded client of its own made for the call
// (see Wait, which keeps one for all its reads).
func (c *Client) Results(ctx context.Context, service, after string, count int64, block time.Duration) ([]Result, error) {
	if count <= 0 {
		count = 100
	}
	if block <= 0 {
		if after == "$" {
			return nil, nil
		}
		p, err := blockread.Range(ctx, c.rdb, ResultsKey(service), "("+after, "+", count, false, resultLimits)
		if err != nil {
			slotmap.Reload(c.rdb, err)
			return nil, fmt.Errorf("controlops: reading %s: %w", ResultsKey(service), err)
		}
		return c.pageResults(service, p), nil
	}
	s := c.resultStream(service)
	defer s.Close()
	return c.readResults(ctx, s, service, after, count, block)
}

// resultLimits bound what a Client loads of a results stream.
var resultLimits = blockread.Limits{Entry: MaxResultLen, Fields: MaxFields, Reply: 1 << 20}

// resultStream returns a bounded reader of service's results stream,
// through a guarded copy of the client (polling one it cannot copy every
// 100ms). The caller closes it.
func (c *Client) resultStream(service string) *blockread.Stream {
	return blockread.NewStream(c.rdb, ResultsKey(service), blockread.Retry, resultLimits, 100*time.Millisecond)
}

func (c *Client) readResults(ctx context.Context, s *blockread.Stream, service, after string, count int64, block time.Duration) ([]Result, error) {
	if after == "$" {
		last, err := s.Last(ctx)
		if err != nil {
			slotmap.Reload(c.rdb, err)
			return nil, fmt.Errorf("controlops: the last id of %s: %w", ResultsKey(service), err)
		}
		after = last
	}
	p, err := s.Read(ctx, after, count, block)
	if err != nil {
		slotmap.Reload(c.rdb, err)
		if perr := operatorRefusal(err, canFollow, "XREAD", "of", ResultsKey(service)); perr != nil {
			return nil, fmt.Errorf("controlops: %w", perr)
		}
		return nil, fmt.Errorf("controlops: XREAD %s: %w", ResultsKey(service), err)
	}
	return c.pageResults(service, p), nil
}

// pageResults parses a page of service's results, leaving the oversized
// ones out, and marks those signed with the client's key (verified).
func (c *Client) pageResults(service string, p blockread.Page) []Result {
	var out []Result
	for _, e := range p.Entries {
		if !e.Oversized {
			out = append(out, c.verified(service, parseResult(redis.XMessage{ID: e.ID, Values: e.Values})))
		}
	}
	return out
}

// verified sets r.Verified: r's sig verifies under the client's key.
func (c *Client) verified(service string, r Result) Result {
	r.Verified = len(c.cfg.keys) > 0 && VerifyResult(c.cfg.keys, service, r) == nil
	return r
}

// Wait follows the results of op (as returned by Send) on service's results
// stream, calling fn (when not nil) for every result of the op, in stream
// order, accepted and ignored included. It returns the final result of each
// instance in instances once all of them have one (done, failed, rejected or
// ignored; a restart's done comes from the new process, back in running).
// When instances is empty and op.Target is an instance id, it waits for that
// instance; when instances is empty and op.Target is "*", it follows results
// until ctx ends.
//
// When ctx ends first, Wait returns the final results so far and an error that
// names the instances without one and wraps ctx.Err(). A Redis error ends Wait
// with that error.
//
// A client with a key believes a done only when it is signed with its key
// (Result.Verified): whoever can write to Redis can append a done for any
// op, and a rolling restart paces itself on them. Such a done is passed to
// fn all the same, and Wait goes on waiting for the instance's own. Every
// other final result ends an instance's wait as it is read, signed or not
// (a rejection for a bad signature cannot be signed with the sender's key):
// a forged one stops the wait early, which deleting the op would do too.
// An instance in insecure mode holds no key: its done is never verified,
// so a client with a key cannot wait for one; when ctx ends, Wait's error
// names the instances whose done it did not believe.
func (c *Client) Wait(ctx context.Context, service string, op Op, instances []string, fn func(Result)) (map[string]Result, error) {
	expect := slices.Clone(instances)
	if len(expect) == 0 && op.Target != TargetAll && op.Target != "" {
		expect = []string{op.Target}
	}
	after := resultsStart(op.StreamID)
	s := c.resultStream(service)
	defer s.Close()
	final := map[string]Result{}
	unsigned := map[string]bool{} // instances whose done was not believed
	missing := func() []string {
		var m []string
		for _, in := range expect {
			if _, ok := final[in]; !ok {
				m = append(m, in)
			}
		}
		return m
	}
	for {
		if len(expect) > 0 && len(missing()) == 0 {
			return final, nil
		}
		if err := ctx.Err(); err != nil {
			if len(expect) == 0 {
				return final, err
			}
			return final, fmt.Errorf("controlops: op %s (%s): no final result from %s%s: %w", op.ID, op.Name, strings.Join(missing(), ", "), unsignedNote(missing(), unsigned), err)
		}
		// A blocked read does not see ctx end: keep each one short.
		block := time.Second
		dl, hasDeadline := ctx.Deadline()
		if hasDeadline {
			block = min(block, max(time.Until(dl), time.Millisecond))
		}
		rs, err := c.readResults(ctx, s, service, after, 100, block)
		if err != nil {
			// A client that applies ctx's deadline to the socket
			// (ContextTimeoutEnabled) may cut the read at the deadline a
			// moment before ctx reports it.
			if ctx.Err() != nil || hasDeadline && !time.Now().Before(dl) {
				<-ctx.Done()
				continue // report the deadline, not the read it cut
			}
			return final, err
		}
		for _, r := range rs {
			after = r.ID
			if r.OpID != op.ID {
				continue
			}
			if fn != nil {
				fn(r)
			}
			if r.Status == StatusDone && len(c.cfg.keys) > 0 && !r.Verified {
				unsigned[r.Instance] = true
				continue // not the instance's word: see above
			}
			if r.Status.Final() {
				if _, seen := final[r.Instance]; !seen || final[r.Instance].Status == StatusIgnored {
					final[r.Instance] = r
				}
			}
		}
	}
}

// unsignedNote says which of the missing instances answered with a done
// the client did not believe, so that a wait on an instance in insecure mode
// (no key, so no signed done) ends with the reason, not only a deadline.
func unsignedNote(missing []string, unsigned map[string]bool) string {
	var u []string
	for _, in := range missing {
		if unsigned[in] {
			u = append(u, in)
		}
	}
	if len(u) == 0 {
		return ""
	}
	return fmt.Sprintf(" (a done not signed with the client's key came from %s: not believed; an instance in insecure mode holds no key to sign with, and a Redis writer can forge one)",
		strings.Join(u, ", "))
}

// resultsStart is the results-stream position from which the results of the op
// at stream ID id can appear: stream IDs start with the server's clock in ms,
// and the two streams share one server (one hash slot), so every result of the
// op has an ID at or after the op's millisecond.
func resultsStart(id string) string {
	ms, _, ok := strings.Cut(id, "-")
	n, err := strconv.ParseUint(ms, 10, 64)
	if !ok || err != nil || n == 0 {
		return "0"
	}
	return strconv.FormatUint(n-1, 10) + "-18446744073709551615"
}
