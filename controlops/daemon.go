package controlops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/ratelog"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/retry"
	"github.com/stargazer/lifecycle/internal/slotmap"
)

// Target is what a Daemon acts on: one instance of a service. The lifecycle
// package implements it; controlops does not import it.
type Target interface {
	// Service is the service name: the daemon reads sg:control:{<Service()>}.
	Service() string
	// Instance is the instance id that ops may target.
	Instance() string
	// State is the current lifecycle state, e.g. "running": results carry it.
	State() string
	// Restartable reports whether a restart may begin now: the instance's
	// state has role serving or draining (phases.RoleServing,
	// phases.RoleDraining) and no stop was asked for. The daemon asks it
	// before it takes a rolling-restart slot and while it waits for one;
	// what a state means is the instance's table's to say, not the daemon's.
	Restartable() bool
	// Do runs op with its JSON args (possibly empty). ctx carries the handling
	// span and ends at Stop or after DefaultHandlerTimeout. It returns an error
	// matching ErrUnknownOp when the target has no such op, ErrInvalidState
	// when the op is not valid in the current state (both reported as
	// rejected), any other error when the op failed. For "restart", Do must only
	// begin the shutdown and return: the Daemon has already taken the slot and
	// written what the new process needs.
	Do(ctx context.Context, op string, args json.RawMessage) error
}

// Mode is what a Daemon accepts. The registry entry's control field and sgctl
// ps show it.
type Mode string

// Modes.
const (
	// ModeSigned: a key is set (WithKeys); only ops signed with one of the
	// keys are executed.
	ModeSigned Mode = "signed"
	// ModeInsecure: no key and WithInsecure: unsigned ops are executed.
	ModeInsecure Mode = "insecure"
	// ModeDisabled: no key and no opt-in, the default: every op is rejected
	// (ErrDisabled), and the reason says how to enable them.
	ModeDisabled Mode = "disabled"
)

// MetricReplayMemoryFull counts the ops a Daemon rejected because its replay
// memory was full (ErrReplayMemoryFull).
const MetricReplayMemoryFull = "controlops.replay_memory.full"

// MetricOversized counts the entries a Daemon rejected unread because they
// held more than MaxEntryLen bytes or MaxFields fields (ErrOversized).
const MetricOversized = "controlops.entries.oversized"

// Daemon is the instance side of the control channel. The lifecycle starts it
// at phase 8.5 and stops it first at shutdown (S1).
type Daemon struct {
	rdb    redis.UniversalClient
	t      Target
	cfg    config
	tracer trace.Tracer
	log    *slog.Logger
	svc    string
	inst   string
	mode   Mode

	notBefore time.Time     // ops issued before it, beyond the skew, are stale
	mem       *replayMemory // nonces this process accepted (signed mode)
	memFull   metric.Int64Counter
	oversize  metric.Int64Counter
	tooLarge  *ratelog.Logger // the warnings about oversized entries
	writes    *retry.Backoff  // result writes; used by the read loop only

	mu          sync.Mutex
	started     bool
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	lastID      string                // last entry handled (or the start position); "" until resolved
	pending     bool                  // Start saw a restart handed over by the old process
	checked     bool                  // Start read the pending key (so Running knows whether to look)
	stream      *blockread.Stream     // the op stream, bounded (Start)
	reader      redis.UniversalClient // the stream's client: blocking reads, the start position, the reads of what Redis writers can bloat
	ownReader   bool                  // reader is ours: Stop closes it
	running     chan struct{}         // closed by Running
	runningOnce sync.Once
	restarted   bool // a restart was accepted: read no further

	readUntil     time.Time // when the daemon stopped reading (restart accepted, or Stop)
	restartIssued time.Time // the accepted restart op's issued_at
}

// New returns a Daemon for target reading through rdb. Options that apply:
// WithKeys (WithKey), WithInsecure, WithNotBefore, WithHandOver,
// WithReplayMemory, WithClock, WithLogger, WithTracerProvider,
// WithMeterProvider, WithBlock, WithBackoff, WithSlotWait, WithCallTimeout.
// Its not-before time defaults to now (on the clock). It touches no network.
func New(rdb redis.UniversalClient, t Target, opts ...Option) (*Daemon, error) {
	if rdb == nil {
		return nil, errors.New("controlops: New: nil redis client")
	}
	if t == nil {
		return nil, errors.New("controlops: New: nil target")
	}
	cfg := newConfig(opts)
	cfg.pid = os.Getpid()
	d := &Daemon{
		rdb: rdb, t: t, cfg: cfg, tracer: cfg.tp.Tracer(ScopeName),
		svc: t.Service(), inst: t.Instance(),
		running: make(chan struct{}),
	}
	d.log = cfg.log.With("component", "controlops")
	switch {
	case len(cfg.keys) > 0:
		d.mode = ModeSigned
	case cfg.insecure:
		d.mode = ModeInsecure
	default:
		d.mode = ModeDisabled
	}
	now := cfg.clock.Now()
	d.notBefore = cfg.notBefore
	if d.notBefore.IsZero() {
		d.notBefore = now
	}
	d.mem = newReplayMemory(cfg.replayMemory)
	d.writes = d.newBackoff("control result writes")
	d.mem.seed(cfg.handed, now)
	var err error
	d.memFull, err = cfg.mp.Meter(ScopeName).Int64Counter(MetricReplayMemoryFull,
		metric.WithDescription("Control ops rejected because the replay memory was full."),
		metric.WithUnit("{op}"))
	if err != nil {
		return nil, fmt.Errorf("controlops: New: %w", err)
	}
	d.oversize, err = cfg.mp.Meter(ScopeName).Int64Counter(MetricOversized,
		metric.WithDescription("Control stream entries rejected unread because they exceeded MaxEntryLen bytes or MaxFields fields."),
		metric.WithUnit("{entry}"))
	if err != nil {
		return nil, fmt.Errorf("controlops: New: %w", err)
	}
	d.tooLarge = ratelog.New(d.log, cfg.clock, ratelog.DefaultInterval)
	return d, nil
}

// Mode returns what the daemon accepts: signed, insecure or disabled.
func (d *Daemon) Mode() Mode { return d.mode }

// Signed reports whether the daemon requires signed entries (it has a key).
func (d *Daemon) Signed() bool { return d.mode == ModeSigned }

// NotBefore returns the daemon's not-before time: ops issued before it, by
// more than the skew, are rejected as stale.
func (d *Daemon) NotBefore() time.Time { return d.notBefore }

// LastID returns the stream ID of the last entry handled, or the start
// position; "" before it is known.
func (d *Daemon) LastID() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastID
}

// Start resolves the start position and starts reading. The position is the
// restart entry when the old process of this instance handed a restart over
// (see the package documentation), otherwise the stream's last entry at Start
// ("0-0" when the stream is empty): every entry added after Start returns is
// read; after a restart hand-over, from the moment Running is called. When
// Redis does not answer within ctx, Start still succeeds and the position is
// resolved once Redis answers. A second Start returns an error.
//
// The same round trip checks that the daemon's Redis user may read the
// stream (a non-blocking XREAD, which reads nothing) and write results (an
// XADD to the results stream that Redis refuses whatever the user, id 0-0,
// NOMKSTREAM: it writes nothing): without them no op could be received or
// answered. When Redis refuses one of these calls for want of permission,
// Start returns that error (matching ErrNoPermission, naming the sg-instance
// role's rule) and the daemon runs all the same, retrying as in an outage,
// so that it works once the user is given the rule: the caller decides (the
// lifecycle fails the boot when Redis is required), and must Stop it.
func (d *Daemon) Start(ctx context.Context) error {
	d.mu.Lock()
	if d.started {
		d.mu.Unlock()
		return errors.New("controlops: daemon already started")
	}
	d.started = true
	d.stream = blockread.NewStream(d.rdb, StreamKey(d.svc), blockread.Retry, opLimits, DefaultSharedBlock)
	d.reader, d.ownReader = d.stream.Client(), d.stream.Own()
	if d.cfg.block <= 0 {
		d.cfg.block = DefaultSharedBlock
		if d.ownReader {
			d.cfg.block = DefaultBlock
		}
	}
	d.mu.Unlock()

	resolveErr := d.resolve(ctx)
	if resolveErr != nil {
		d.log.Warn("control stream position not resolved yet; retrying in the background", "error", resolveErr)
	}
	switch d.mode {
	case ModeSigned:
		if d.cfg.insecure {
			d.log.Warn("SG_CONTROL_INSECURE=true is ignored: a key is set, so control ops must be signed")
		}
	case ModeInsecure:
		d.log.Warn("SG_CONTROL_INSECURE=true: unsigned control ops are accepted; anyone who can write to Redis can restart or pull this instance",
			"stream", StreamKey(d.svc))
	case ModeDisabled:
		d.log.Info("control ops are disabled (no SG_CONTROL_KEY): every op is rejected; set SG_CONTROL_KEY, or SG_CONTROL_INSECURE=true to accept unsigned ops",
			"stream", StreamKey(d.svc))
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.mu.Lock()
	d.cancel = cancel
	d.mu.Unlock()
	d.wg.Add(2)
	go func() { defer d.wg.Done(); d.loop(runCtx) }()
	go func() { defer d.wg.Done(); d.finisher(runCtx) }()
	d.log.Info("control-ops daemon started", "stream", StreamKey(d.svc), "from", d.LastID(), "control", string(d.mode),
		"key_ids", strings.Join(KeyIDs(d.cfg.keys), ","), "not_before", d.notBefore.UTC().Format(time.RFC3339Nano))
	if errors.Is(resolveErr, ErrNoPermission) {
		return resolveErr
	}
	return nil
}

// Stop cancels the daemon and waits for it: an op being handled sees its
// context cancelled, a blocked read ends at once (the daemon reads through a
// client of its own, copied from a *redis.Client or *redis.ClusterClient, and
// Stop closes it, which closes the blocked connection: go-redis does not end
// a blocked read when its context ends; with other clients the daemon polls,
// and Stop ends its wait at once). It
// returns ctx's error if ctx ends first (the daemon still stops). Stop before
// Start, or a second Stop, returns nil.
func (d *Daemon) Stop(ctx context.Context) error {
	d.mu.Lock()
	cancel := d.cancel
	d.cancel = nil
	if cancel != nil && d.readUntil.IsZero() {
		d.readUntil = d.cfg.clock.Now()
	}
	d.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	_ = d.stream.Close() // ends a blocked read at once (a copy only)
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		d.log.Info("control-ops daemon stopped", "last_id", d.LastID())
		return nil
	case <-ctx.Done():
		<-done // the goroutines end on their own: the block time bounds them
		return fmt.Errorf("controlops: stopping daemon: %w", ctx.Err())
	}
}

// Running tells the daemon that its instance reached running. If the old process
// of this instance handed a restart over, the daemon writes the restart's done
// result, gives the rolling-restart slot back and deletes the hand-over, in the
// background, and only then reads the entries that came after the restart:
// the ops sent while the instance restarted run once it can run them, instead
// of being rejected for the state it is booting in. It never blocks; calls
// after the first do nothing.
func (d *Daemon) Running() {
	d.runningOnce.Do(func() { close(d.running) })
}

// resolve fixes the start position once, in one round trip that also
// checks the user may read the stream and write results (see Start).
func (d *Daemon) resolve(ctx context.Context) error {
	d.mu.Lock()
	known := d.lastID != ""
	d.mu.Unlock()
	if known {
		return nil
	}
	pk, stream, results := PendingKey(d.svc, d.inst), StreamKey(d.svc), ResultsKey(d.svc)
	pipe := d.reader.Pipeline()
	read := pipe.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, "$"}, Count: 1, Block: -1})
	write := queueWriteProbe(ctx, pipe, results)
	_, _ = pipe.Exec(ctx) // each command has its own reply (a connection failure sets every one's)
	if err := read.Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("controlops: XREAD %s: %w", stream, refused(redisacl.Instance, err, "XREAD", stream))
	}
	if err := writeProbeErr(redisacl.Instance, write, results); err != nil {
		return fmt.Errorf("controlops: %w", err)
	}
	// Apart, through the guarded reader: a hand-over someone bloated is
	// refused, and a refusal closes the connection under every reply after it.
	h, err := d.handOver(d.reader.HGetAll(ctx, pk))
	if err != nil {
		return err
	}
	pos := h[pendingEntry]
	if pos == "" {
		// The last entry may be anyone's, of any size: its id alone.
		if pos, err = d.stream.Last(ctx); err != nil {
			return fmt.Errorf("controlops: XREVRANGE %s: %w", stream, refused(redisacl.Instance, err, "XREVRANGE", stream))
		}
	}
	d.mu.Lock()
	d.lastID, d.pending, d.checked = pos, len(h) > 0, true
	d.mu.Unlock()
	return nil
}

// newBackoff returns the backoff of one of the daemon's retrying loops, doing
// what: the WithBackoff policy, on the daemon's clock, logging through its
// logger (a warn line when a run of failures begins, then at most one a
// minute, and an info line when it ends).
func (d *Daemon) newBackoff(what string) *retry.Backoff {
	return retry.New(what, d.cfg.backoff, retry.WithClock(d.cfg.clock), retry.WithRand(d.cfg.rand), retry.WithLogger(d.log))
}

// retryAfter records err in b and waits the backoff; it reports whether ctx
// is still live. On Redis Cluster a dead master's slots move to its replica:
// the clients that failed reload their slot maps, and the wait is then at
// most a second, so the daemon reaches the promoted replica within about a
// second of the promotion.
func (d *Daemon) retryAfter(ctx context.Context, b *retry.Backoff, err error, failed []redis.UniversalClient, args ...any) bool {
	stale := false
	for _, c := range failed {
		if slotmap.Reload(c, err) {
			stale = true
		}
	}
	wait := b.Failed(ctx, err, args...)
	if stale {
		wait = min(wait, time.Second)
	}
	return b.Wait(ctx, wait)
}

// sleep waits d on the clock or until ctx ends; false when ctx ended.
func (d *Daemon) sleep(ctx context.Context, dur time.Duration) bool {
	t := d.cfg.clock.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.Chan():
		return true
	case <-ctx.Done():
		return false
	}
}

// call bounds one Redis call with the call timeout (WithCallTimeout).
func (d *Daemon) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.callTimeout)
}

// errRetry: the entry could not be decided because Redis failed; read it again.
var errRetry = errors.New("controlops: redis unavailable while handling")

func (d *Daemon) loop(ctx context.Context) {
	b := d.newBackoff("control stream reads")
	fail := func(what string, err error) bool {
		return d.retryAfter(ctx, b, err, []redis.UniversalClient{d.reader, d.rdb}, "op", what)
	}
	for ctx.Err() == nil {
		if err := d.resolve(ctx); err != nil {
			if ctx.Err() != nil || !fail("resolve", err) {
				return
			}
			continue
		}
		d.mu.Lock()
		after, restarted, pending := d.lastID, d.restarted, d.pending
		d.mu.Unlock()
		if restarted {
			// The shutdown that follows stops us; read nothing meanwhile.
			<-ctx.Done()
			return
		}
		if pending {
			// Resuming a restart: what was sent meanwhile waits for running.
			select {
			case <-d.running:
			case <-ctx.Done():
				return
			}
		}
		page, err := d.stream.Read(ctx, after, readCount, d.cfg.block)
		if err != nil {
			err = refused(redisacl.Instance, err, "XREAD", StreamKey(d.svc))
			if ctx.Err() != nil || !fail("XREAD", err) {
				return
			}
			continue
		}
		b.Succeeded(ctx, "from", after)
		for _, e := range page.Entries {
			err := d.handle(ctx, redis.XMessage{ID: e.ID, Values: e.Values}, d.tooLargeErr(ctx, e))
			if errors.Is(err, errRetry) {
				if !fail("handle", err) {
					return
				}
				break
			}
			if ctx.Err() != nil && err != nil {
				return
			}
			d.mu.Lock()
			d.lastID = e.ID
			stop := d.restarted
			d.mu.Unlock()
			if stop {
				break
			}
		}
	}
}

// handle decides one entry and writes its final result. It returns errRetry
// (nothing executed, nothing written) when Redis failed before the decision,
// and the context's error when the daemon stopped before the result was
// written. tooLarge, when not nil, rejects the entry, of which m holds the
// short fields only.
func (d *Daemon) handle(ctx context.Context, m redis.XMessage, tooLarge error) error {
	op, perr := Parse(m.Values)
	if tooLarge != nil {
		perr = tooLarge
	}
	op.StreamID = m.ID
	tp := op.Traceparent
	if perr != nil {
		tp, _ = m.Values[FieldTraceparent].(string)
		if len(op.ID) > MaxIDLen || !idRE.MatchString(op.ID) {
			op.ID = ""
		}
		if fleetenv.ValidateOp(op.Name) != nil {
			op.Name = ""
		}
	}
	parent := propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
	ctx, span := d.tracer.Start(parent, SpanHandle, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(AttrService.String(d.svc), AttrInstance.String(d.inst),
			AttrOp.String(op.Name), AttrOpID.String(op.ID), AttrTarget.String(op.Target)))
	defer span.End()

	res := Result{OpID: op.ID, Op: op.Name, Entry: m.ID, Instance: d.inst}
	status, reason, keyID, err := d.decide(ctx, op, perr)
	if errors.Is(err, errRetry) {
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	res.Status, res.Reason, res.KeyID = status, reason, keyID
	span.SetAttributes(AttrStatus.String(string(status)))
	if reason != "" {
		span.SetAttributes(AttrReason.String(reason))
	}
	if keyID != "" {
		span.SetAttributes(AttrKeyID.String(keyID))
	}
	if status == StatusFailed || status == StatusRejected {
		span.SetStatus(codes.Error, reason)
	}
	if status != StatusIgnored {
		d.log.Info("control op", "op", op.Name, "op_id", op.ID, "entry", m.ID, "status", string(status), "reason", reason, "key_id", keyID)
	}
	return d.writeResult(ctx, res)
}

// decide runs the checks and the op; it returns the final status and the id
// of the key that verified the op ("" when it was not verified).
func (d *Daemon) decide(ctx context.Context, op Op, perr error) (Status, string, string, error) {
	if perr != nil {
		return StatusRejected, perr.Error(), "", nil
	}
	if !op.Addressed(d.inst) {
		return StatusIgnored, "addressed to " + op.Target, "", nil
	}
	keyID, err := d.admit(op, d.cfg.clock.Now())
	if err != nil {
		return StatusRejected, err.Error(), keyID, nil
	}
	if d.Signed() {
		if err := d.claimNonce(ctx, op); err != nil {
			if errors.Is(err, ErrReplayed) || errors.Is(err, ErrNoPermission) {
				// A refused claim heals only when the user is given the
				// rule: the op is not executed, and the reason says why.
				return StatusRejected, err.Error(), keyID, nil
			}
			return "", "", "", err
		}
	}
	if op.Name == OpRestart {
		status, reason, err := d.restart(ctx, op, keyID)
		return status, reason, keyID, err
	}
	hctx, cancel := context.WithTimeout(ctx, d.cfg.handlerTimeout)
	defer cancel()
	status, reason, err := outcome(d.do(hctx, op.Name, op.Args))
	return status, reason, keyID, err
}

// admit runs the checks that need no Redis on an op addressed to this
// instance, in this order: the mode (disabled rejects all), the window
// (Fresh), the not-before time (Stale), then, with keys, the signature
// (VerifyAny) and the replay memory. It returns the id of the key that
// verified op, and an error when op must be rejected. A signed op that passes
// is remembered until its window closes, whatever happens to it next.
func (d *Daemon) admit(op Op, now time.Time) (string, error) {
	if d.mode == ModeDisabled {
		return "", ErrDisabled
	}
	if err := op.Fresh(now, d.cfg.skew); err != nil {
		return "", err
	}
	if err := op.Stale(d.notBefore, d.cfg.skew); err != nil {
		return "", err
	}
	if d.mode != ModeSigned {
		return "", nil
	}
	keyID, err := VerifyAny(d.cfg.keys, d.svc, op)
	if err != nil {
		return "", err
	}
	err = d.mem.claim(op.Nonce, op.StreamID, op.IssuedAt, op.IssuedAt.Add(op.TTL+d.cfg.skew), now)
	if errors.Is(err, ErrReplayMemoryFull) {
		d.memFull.Add(context.Background(), 1)
		d.log.Warn("replay memory full: control op rejected", "op_id", op.ID, "error", err)
	}
	return keyID, err
}

// do calls Target.Do, turning a panic into an error.
func (d *Daemon) do(ctx context.Context, name string, args json.RawMessage) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("controlops: op %q panicked: %v", name, v)
		}
	}()
	return d.t.Do(ctx, name, args)
}

func outcome(err error) (Status, string, error) {
	switch {
	case err == nil:
		return StatusDone, "", nil
	case errors.Is(err, ErrUnknownOp), errors.Is(err, ErrInvalidState):
		return StatusRejected, err.Error(), nil
	default:
		return StatusFailed, err.Error(), nil
	}
}
