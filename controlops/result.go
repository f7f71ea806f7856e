package controlops

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/textcut"
)

// Keys. {<service>} is a Redis Cluster hash tag: all of one service's control
// keys share its slot, so the daemon's scripts and pipelines touch one node.

// StreamKey returns the service's op stream: "sg:control:{<service>}".
func StreamKey(service string) string { return "sg:control:{" + service + "}" }

// ResultsKey returns the service's results stream: "sg:control:results:{<service>}".
func ResultsKey(service string) string { return "sg:control:results:{" + service + "}" }

// NonceKey returns the key an instance claims, with SET NX and an expiry, to
// accept a nonce once: "sg:control:nonce:{<service>}:<instance>:<nonce>". It is
// per instance because an op for "*" is executed once by every instance.
func NonceKey(service, instance, nonce string) string {
	return "sg:control:nonce:{" + service + "}:" + instance + ":" + nonce
}

// SlotsKey returns the sorted set of rolling-restart slots:
// "sg:control:slots:{<service>}", members instance ids, scores the slot's expiry
// (unix ms).
func SlotsKey(service string) string { return "sg:control:slots:{" + service + "}" }

// PendingKey returns the key that carries a restart from the old process to the
// new one: "sg:control:pending:{<service>}:<instance>", a hash with the op's id,
// stream ID and traceparent, expiring with the slot.
func PendingKey(service, instance string) string {
	return "sg:control:pending:{" + service + "}:" + instance
}

// Limits of a result entry. A Daemon writes none beyond them (it cuts a
// longer reason to MaxReasonLen, ending it with "…"); a Client never loads
// one beyond them (Results, Wait).
const (
	MaxReasonLen = 2 << 10 // reason, bytes
	MaxResultLen = 8 << 10 // bytes of one result entry: its field names and values summed
)

// Status is the outcome of one op on one instance.
type Status string

// Result statuses. Every instance writes exactly one final result (done,
// failed, rejected or ignored) per entry it reads; a restart also writes
// accepted first (see the package documentation).
const (
	// StatusAccepted: not final. The old process began the restart: its shutdown
	// follows; done comes from the new process once it is running.
	StatusAccepted Status = "accepted"
	// StatusDone: the op ran; the instance is back in running (State says).
	StatusDone Status = "done"
	// StatusFailed: the op ran and failed (a failing pull handler, no restart
	// slot in time); the instance is still running.
	StatusFailed Status = "failed"
	// StatusRejected: the op was not executed: control ops disabled, malformed,
	// unsigned, badly signed, expired, stale, replayed, replay memory full,
	// unknown, or not valid in the current state (Reason says).
	StatusRejected Status = "rejected"
	// StatusIgnored: the op was addressed to another instance.
	StatusIgnored Status = "ignored"
)

// Final reports whether s is the last result of an op on an instance.
func (s Status) Final() bool { return s != StatusAccepted && s != "" }

// Result field names on sg:control:results:{<name>}.
const (
	ResultOpID     = "op_id"
	ResultOp       = "op"
	ResultStreamID = "entry" // the op's stream ID
	ResultInstance = "instance"
	ResultStatus   = "status"
	ResultReason   = "reason"
	ResultAt       = "at" // unix ms
	ResultState    = "state"
	ResultPID      = "pid"
	ResultTraceID  = "trace_id"
	ResultKeyID    = "key_id" // KeyID of the key that verified the op; "" when unsigned
	ResultSig      = "sig"    // hex HMAC-SHA256 of Result.Canonical under that key; absent when unsigned
)

// Result is one entry of the results stream.
type Result struct {
	// ID is the result's own stream ID.
	ID string
	// OpID is the op's id ("" when the entry was too malformed to have one).
	OpID string
	// Op is the op's name, when known.
	Op string
	// Entry is the op's stream ID on sg:control:{<name>}.
	Entry    string
	Instance string
	Status   Status
	// Reason says why an op was rejected or failed.
	Reason string
	At     time.Time
	// State is the instance's lifecycle state when it wrote the result.
	State string
	// PID is the writing process: after a restart, the new one's.
	PID int
	// TraceID is the trace of the handling, hex.
	TraceID string
	// KeyID names the key that verified the op (KeyID, never the key); "" when
	// the op was not verified (insecure mode, or rejected before).
	KeyID string
	// Sig is the result's signature (SignResult) under the key KeyID
	// names: a Daemon signs every result of an op that one of its keys
	// verified. "" when unsigned.
	Sig string
	// Verified is set by a Client that read the result (Results, Wait):
	// Sig verifies under the client's key, so the result was written by an
	// instance that holds the key, for the op it names (VerifyResult). It
	// is never read from Redis.
	Verified bool

	// raw holds resultFields as the entry held them when read
	// (parseResult), which VerifyResult checks; nil for a Result built in
	// memory.
	raw *[len(resultFieldNames)]string
}

// cutReason cuts s to MaxReasonLen bytes at a character boundary, the last
// bytes replaced by "…" when it was longer.
func cutReason(s string) string { return textcut.Bytes(s, MaxReasonLen) }

func (r Result) values() map[string]any {
	v := map[string]any{
		ResultOpID:     r.OpID,
		ResultOp:       r.Op,
		ResultStreamID: r.Entry,
		ResultInstance: r.Instance,
		ResultStatus:   string(r.Status),
		ResultReason:   cutReason(r.Reason),
		ResultAt:       strconv.FormatInt(r.At.UnixMilli(), 10),
		ResultState:    r.State,
		ResultPID:      strconv.Itoa(r.PID),
		ResultTraceID:  r.TraceID,
		ResultKeyID:    r.KeyID,
	}
	if r.Sig != "" {
		v[ResultSig] = r.Sig
	}
	return v
}

func parseResult(m redis.XMessage) Result {
	s := func(k string) string { v, _ := m.Values[k].(string); return v }
	r := Result{
		ID: m.ID, OpID: s(ResultOpID), Op: s(ResultOp), Entry: s(ResultStreamID),
		Instance: s(ResultInstance), Status: Status(s(ResultStatus)), Reason: s(ResultReason),
		State: s(ResultState), TraceID: s(ResultTraceID), KeyID: s(ResultKeyID), Sig: s(ResultSig),
	}
	r.raw = new([len(resultFieldNames)]string)
	for i, f := range resultFields {
		r.raw[i] = s(f)
	}
	if ms, err := strconv.ParseInt(s(ResultAt), 10, 64); err == nil {
		r.At = time.UnixMilli(ms)
	}
	r.PID, _ = strconv.Atoi(s(ResultPID))
	return r
}

// writeResult appends res, retrying with backoff until it is written or ctx
// ends.
func (d *Daemon) writeResult(ctx context.Context, res Result) error {
	res.At = d.cfg.clock.Now()
	res.State = d.t.State()
	res.PID = d.cfg.pid
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		res.TraceID = sc.TraceID().String()
	}
	res = d.signResult(res)
	args := &redis.XAddArgs{Stream: ResultsKey(d.svc), MaxLen: d.cfg.resultsMaxLen, Approx: true, Values: res.values()}
	for {
		// Written even while stopping: a restart's accepted must get out.
		wctx, cancel := d.call(context.WithoutCancel(ctx))
		err := refused(redisacl.Instance, d.rdb.XAdd(wctx, args).Err(), "XADD", args.Stream)
		cancel()
		if err == nil {
			d.writes.Succeeded(ctx, "op_id", res.OpID)
			return nil
		}
		if !d.retryAfter(ctx, d.writes, err, []redis.UniversalClient{d.rdb}, "op_id", res.OpID, "status", string(res.Status)) {
			return fmt.Errorf("controlops: result for %s not written: %w", res.Entry, ctx.Err())
		}
	}
}
