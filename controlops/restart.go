package controlops

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
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
var takeSlot = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  return 1
end
return 0
`)

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
	_, err := d.rdb.TxPipelined(tctx, func(p redis.Pipeliner) error {
		p.HSet(tctx, pk, pendingOpID, op.ID, pendingEntry, op.StreamID, pendingTrace, carrier.Get("traceparent"), pendingSlot, strconv.FormatBool(slot), pendingKeyID, keyID)
		p.PExpire(tctx, pk, d.cfg.slotTTL)
		return nil
	})
	cancel()
	if err != nil {
		d.releaseSlot(ctx, slot)
		return "", "", fmt.Errorf("%w: HSET %s: %w", errRetry, pk, err)
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
	for {
		err := d.finishRestart(ctx)
		if err == nil {
			b.Succeeded(ctx)
			return
		}
		if ctx.Err() != nil || !d.retryAfter(ctx, b, err, []redis.UniversalClient{d.rdb}) {
			return
		}
	}
}

func (d *Daemon) finishRestart(ctx context.Context) error {
	d.mu.Lock()
	checked, pending := d.checked, d.pending
	d.mu.Unlock()
	if checked && !pending {
		return nil
	}
	pk := PendingKey(d.svc, d.inst)
	hctx, cancel := d.call(ctx)
	h, err := d.handOver(hctx)
	cancel()
	if err != nil {
		return err
	}
	if len(h) == 0 {
		return nil
	}
	parent := propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": h[pendingTrace]})
	sctx, span := d.tracer.Start(parent, SpanRestarted, trace.WithAttributes(
		AttrService.String(d.svc), AttrInstance.String(d.inst), AttrOp.String(OpRestart),
		AttrOpID.String(h[pendingOpID]), AttrStatus.String(string(StatusDone))))
	defer span.End()
	res := Result{OpID: h[pendingOpID], Op: OpRestart, Entry: h[pendingEntry], Instance: d.inst, KeyID: h[pendingKeyID],
		Status: StatusDone, At: d.cfg.clock.Now(), State: d.t.State(), PID: d.cfg.pid, TraceID: span.SpanContext().TraceID().String()}
	if !span.SpanContext().IsValid() {
		res.TraceID = ""
	}
	sctx, cancel = d.call(sctx)
	defer cancel()
	_, err = d.rdb.TxPipelined(sctx, func(p redis.Pipeliner) error {
		p.XAdd(sctx, &redis.XAddArgs{Stream: ResultsKey(d.svc), MaxLen: d.cfg.resultsMaxLen, Approx: true, Values: res.values()})
		p.ZRem(sctx, SlotsKey(d.svc), d.inst)
		p.Del(sctx, pk)
		return nil
	})
	if err != nil {
		return fmt.Errorf("completing restart %s: %w", h[pendingOpID], err)
	}
	d.log.Info("restart completed", "op_id", h[pendingOpID], "entry", h[pendingEntry], "pid", d.cfg.pid)
	return nil
}
