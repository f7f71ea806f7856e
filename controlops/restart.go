package controlops

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redisacl"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Fields of the pending hash (PendingKey).
const (
	pendingOpID  = "op_id"
	pendingEntry = "entry"
	pendingTrace = "traceparent"
	pendingSlot  = "slot"
	pendingKeyID = "key_id"
)

// SpanRestarted is the span of the new process finishing a restart: a child of
// the old process's handling span.
const SpanRestarted = "controlops.restarted"

// takeSlot takes a slot for instance when fewer than max unexpired members
// hold one (or refreshes the one it holds). KEYS[1] slots; ARGV: instance, now
// ms, expiry ms, max.
var takeSlot = redis.NewScript(takeSlotSrc)

// takeSlotSrc is takeSlot's source, kept to explain a refusal inside it
// (Redis 7.0 names the line: one call per line).
const takeSlotSrc = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or
   redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  return 1
end
return 0
`

// handOver writes the pending hash KEYS[1] with its expiry, in one step:
// ARGV[1] the expiry in ms, then its fields and values. (A script rather
// than MULTI/EXEC: a Redis user refused EXEC would leave its connection
// inside MULTI, queueing every later command of the pool's connection.)
var handOver = redis.NewScript(handOverSrc)

// handOverSrc is handOver's source, kept to explain a refusal inside it.
const handOverSrc = `
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`

// restart takes a slot if asked, hands the restart over to the next process
// and asks the target to shut down.
func (d *Daemon) restart(ctx context.Context, op Op, keyID string) (Status, string, error) {
	var args RestartArgs
	if len(op.Args) > 0 {
		if err := json.Unmarshal(op.Args, &args); err != nil {
			return StatusRejected, fmt.Sprintf("%v: restart args: %v", ErrMalformed, err), nil
		}
	}
	if args.MaxUnavailable < 0 {
		return StatusRejected, fmt.Sprintf("%v: restart args: max_unavailable %d: want >= 0", ErrMalformed, args.MaxUnavailable), nil
	}
	if !d.t.Restartable() {
		return StatusRejected, fmt.Sprintf("%v: restart in state %q", ErrInvalidState, d.t.State()), nil
	}
	slot := args.MaxUnavailable > 0
	if slot {
		if status, reason, err := d.waitSlot(ctx, args.MaxUnavailable); status != "" || err != nil {
			return status, reason, err
		}
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	pk := PendingKey(d.svc, d.inst)
	tctx, cancel := d.call(ctx)
	err := handOver.Run(tctx, d.rdb, []string{pk}, d.cfg.slotTTL.Milliseconds(),
		pendingOpID, op.ID, pendingEntry, op.StreamID, pendingTrace, carrier.Get("traceparent"), pendingSlot, strconv.FormatBool(slot), pendingKeyID, keyID).Err()
	cancel()
	if redisacl.Refused(err) {
		// It heals only when the user is given the rule: the restart does
		// not begin, and the reason says why. A script is not undone by
		// its error: a refused PEXPIRE would leave the hash for good.
		dctx, cancel := d.call(context.WithoutCancel(ctx))
		d.rdb.Del(dctx, pk)
		cancel()
		d.releaseSlot(ctx, slot)
		err = redisacl.Explain(err, redisacl.Instance, redisacl.Call{Cmd: "EVALSHA", Keys: []string{pk}, Script: handOverSrc})
		return StatusRejected, fmt.Sprintf("handing the restart over: %s: %v", pk, err), nil
	}
	if err != nil {
		d.releaseSlot(ctx, slot)
		return "", "", fmt.Errorf("%w: handing the restart over: %s: %w", errRetry, pk, err)
	}
	if err := d.do(ctx, OpRestart, op.Args); err != nil {
		dctx, cancel := d.call(context.WithoutCancel(ctx))
		d.rdb.Del(dctx, pk)
		cancel()
		d.releaseSlot(ctx, slot)
		return outcome(err)
	}
	d.mu.Lock()
	d.restarted = true
	d.readUntil, d.restartIssued = d.cfg.clock.Now(), op.IssuedAt
	d.mu.Unlock()
	return StatusAccepted, "", nil
}

func (d *Daemon) releaseSlot(ctx context.Context, slot bool) {
	if slot {
		zctx, cancel := d.call(context.WithoutCancel(ctx))
		defer cancel()
		d.rdb.ZRem(zctx, SlotsKey(d.svc), d.inst)
	}
}

// waitSlot polls for a slot until it gets one (returns "", "", nil), the wait
// runs out (failed), the instance may no longer restart (Target.Restartable:
// rejected) or the daemon stops.
func (d *Daemon) waitSlot(ctx context.Context, max int) (Status, string, error) {
	deadline := d.cfg.clock.Now().Add(d.cfg.slotWait)
	logged := false
	for {
		now := d.cfg.clock.Now()
		sctx, cancel := d.call(ctx)
		ok, err := takeSlot.Run(sctx, d.rdb, []string{SlotsKey(d.svc)},
			d.inst, now.UnixMilli(), now.Add(d.cfg.slotTTL).UnixMilli(), max).Int()
		cancel()
		if err == nil && ok == 1 {
			return "", "", nil
		}
		if redisacl.Refused(err) {
			err = redisacl.Explain(err, redisacl.Instance, redisacl.Call{Cmd: "EVALSHA", Keys: []string{SlotsKey(d.svc)}, Script: takeSlotSrc})
			return StatusRejected, fmt.Sprintf("taking a restart slot (max_unavailable %d): %v", max, err), nil
		}
		if err != nil && ctx.Err() == nil {
			d.log.Warn("restart slot: redis error; retrying", "error", err)
		}
		if !d.cfg.clock.Now().Before(deadline) {
			return StatusFailed, fmt.Sprintf("no restart slot (max_unavailable %d) within %s", max, d.cfg.slotWait), nil
		}
		if !d.t.Restartable() {
			return StatusRejected, fmt.Sprintf("%v: no longer restartable (state %q) while waiting for a restart slot", ErrInvalidState, d.t.State()), nil
		}
		if !logged {
			d.log.Info("waiting for a restart slot", "max_unavailable", max)
			logged = true
		}
		if !d.sleep(ctx, d.cfg.slotPoll) {
			return "", "", ctx.Err()
		}
	}
}

// finisher completes a restart handed over by the old process once Running is
// called.
func (d *Daemon) finisher(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-d.running:
	}
	b := d.newBackoff("restart completion")
	written := false // the done result is in the stream: a retry only cleans up
	for {
		err := d.finishRestart(ctx, &written)
		if err == nil {
			b.Succeeded(ctx)
			return
		}
		if ctx.Err() != nil || !d.retryAfter(ctx, b, err, []redis.UniversalClient{d.rdb}) {
			return
		}
	}
}

// finishRestart gives the slot back, writes the restart's done result
// (unless *written says it did already) and deletes the pending hash, in
// that order in one pipelined round trip: once done is read, the slot is
// free. They are commands of their own, not a script or a transaction: the
// sg-instance role only writes the results stream, and a script's keys
// need read and write. Each is idempotent but the result, which a retry
// after a failure does not write twice.
func (d *Daemon) finishRestart(ctx context.Context, written *bool) error {
	d.mu.Lock()
	checked, pending := d.checked, d.pending
	d.mu.Unlock()
	if checked && !pending {
		return nil
	}
	pk := PendingKey(d.svc, d.inst)
	hctx, cancel := d.call(ctx)
	h, err := d.handOver(d.reader.HGetAll(hctx, pk))
	cancel()
	if err != nil {
		return err
	}
	if len(h) == 0 {
		return nil
	}
	var span trace.Span
	if !*written {
		parent := propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": h[pendingTrace]})
		ctx, span = d.tracer.Start(parent, SpanRestarted, trace.WithAttributes(
			AttrService.String(d.svc), AttrInstance.String(d.inst), AttrOp.String(OpRestart),
			AttrOpID.String(h[pendingOpID]), AttrStatus.String(string(StatusDone))))
		defer span.End()
	}
	cctx, cancel := d.call(ctx)
	defer cancel()
	pipe := d.rdb.Pipeline()
	pipe.ZRem(cctx, SlotsKey(d.svc), d.inst)
	var add *redis.StringCmd
	if !*written {
		res := Result{OpID: h[pendingOpID], Op: OpRestart, Entry: h[pendingEntry], Instance: d.inst, KeyID: h[pendingKeyID],
			Status: StatusDone, At: d.cfg.clock.Now(), State: d.t.State(), PID: d.cfg.pid, TraceID: span.SpanContext().TraceID().String()}
		if !span.SpanContext().IsValid() {
			res.TraceID = ""
		}
		res = d.signResult(res)
		add = pipe.XAdd(cctx, &redis.XAddArgs{Stream: ResultsKey(d.svc), MaxLen: d.cfg.resultsMaxLen, Approx: true, Values: res.values()})
	}
	pipe.Del(cctx, pk)
	cmds, err := pipe.Exec(cctx)
	if add != nil && add.Err() == nil {
		*written = true
		d.log.Info("restart completed", "op_id", h[pendingOpID], "entry", h[pendingEntry], "pid", d.cfg.pid)
	}
	for _, c := range cmds {
		if cerr := c.Err(); cerr != nil {
			key := fmt.Sprint(c.Args()[1])
			return fmt.Errorf("completing restart %s: %s %s: %w", h[pendingOpID], strings.ToUpper(c.Name()), key,
				refused(redisacl.Instance, cerr, c.Name(), key))
		}
	}
	if err != nil {
		return fmt.Errorf("completing restart %s: %w", h[pendingOpID], err)
	}
	return nil
}
