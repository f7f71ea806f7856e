// Package jobmachine is an example: a job workflow with retries, built on the
// observable state machine of github.com/stargazer/lifecycle through its public
// API only. It gets what the service lifecycle gets from the same machine: a
// span per transition (with lifecycle.machine=job and lifecycle.event/from/to/guard), a span per piece of
// work, observers for status, and diagrams drawn from its own table.
//
// The workflow is data, in Table: start takes a queued job to running; succeed
// ends it in succeeded; fail goes to retrying when the guard retries_left holds
// and to failed when it does not, and the span of that transition records which;
// retry goes back to running; cancel ends it in failed from any state but the
// terminal ones. The diagram in README.md is diagrams.Mermaid(&Table).
package jobmachine

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
)

// States of a job.
const (
	Queued    phases.State = "queued"
	Running   phases.State = "running"
	Retrying  phases.State = "retrying"
	Succeeded phases.State = "succeeded"
	Failed    phases.State = "failed"
)

// Events of a job.
const (
	Start   phases.Event = "start"
	Succeed phases.Event = "succeed"
	Fail    phases.Event = "fail"
	Retry   phases.Event = "retry"
	Cancel  phases.Event = "cancel"
)

// GuardRetriesLeft holds while the job has attempts left.
const GuardRetriesLeft = "retries_left"

// Table is the job workflow. NewMachine validates it; diagrams.Mermaid and
// diagrams.DOT draw it.
var Table = phases.Table{
	Name:    "job",
	Initial: Queued,
	Groups: []phases.GroupInfo{
		{Name: "work", Doc: "the job is waiting, working or about to retry"},
		{Name: "done", Doc: "the job is over"},
	},
	States: []phases.StateInfo{
		{Name: Queued, Label: "1", Number: 1, Group: "work", Doc: "accepted, not started"},
		{Name: Running, Label: "2", Number: 2, Group: "work", Hook: "the work function", Doc: "an attempt is in progress"},
		{Name: Retrying, Group: "work", Doc: "an attempt failed; another one follows"},
		{Name: Succeeded, Group: "done", Terminal: true, Doc: "an attempt succeeded"},
		{Name: Failed, Group: "done", Terminal: true, Doc: "out of attempts, or cancelled"},
	},
	Guards: []phases.GuardInfo{
		{Name: GuardRetriesLeft, Doc: "fewer attempts made than the job allows"},
	},
	Transitions: []phases.Transition{
		{Event: Start, From: []phases.State{Queued}, To: Running},
		{Event: Succeed, From: []phases.State{Running}, To: Succeeded},
		{Event: Fail, From: []phases.State{Running}, To: Retrying, Guard: phases.Guard{Name: GuardRetriesLeft}},
		{Event: Fail, From: []phases.State{Running}, To: Failed, Guard: phases.Guard{Name: GuardRetriesLeft, Not: true}},
		{Event: Retry, From: []phases.State{Retrying}, To: Running},
		{Event: Cancel, From: []phases.State{Queued, Running, Retrying}, To: Failed},
	},
}

// Config configures a Job. The zero value is usable: one attempt, the global
// providers, no observers.
type Config struct {
	// MaxAttempts is how many times the work may run; values below 1 mean 1.
	MaxAttempts int
	// TracerProvider receives the job, transition and attempt spans; nil means
	// the global one.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the machine's metrics (lifecycle.transitions,
	// lifecycle.phase.duration, lifecycle.state); nil means the global one.
	MeterProvider metric.MeterProvider
	// Observers are told about every transition, after the tracing and metrics
	// observers, on the goroutine that runs the job. They must not block.
	Observers []lifecycle.Observer
}

// Job runs a unit of work through Table.
type Job struct {
	name     string
	max      int
	attempts int // made so far; read by the retries_left guard
	m        *lifecycle.Machine
	tracer   trace.Tracer
}

// ErrCancelled is returned by Run when its context ends before the job does.
var ErrCancelled = errors.New("jobmachine: cancelled")

// New builds a job in state queued.
func New(name string, cfg Config) (*Job, error) {
	j := &Job{name: name, max: max(cfg.MaxAttempts, 1)}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	j.tracer = tp.Tracer("github.com/stargazer/lifecycle/examples/jobmachine")
	opts := []lifecycle.MachineOption{
		lifecycle.WithGuard(GuardRetriesLeft, func() bool { return j.attempts < j.max }),
		lifecycle.WithMachineTracerProvider(tp),
		lifecycle.WithMachineMeterProvider(cfg.MeterProvider),
	}
	for _, o := range cfg.Observers {
		opts = append(opts, lifecycle.WithMachineObserver(o))
	}
	m, err := lifecycle.NewMachine(&Table, opts...)
	if err != nil {
		return nil, fmt.Errorf("jobmachine: job %q: %w", name, err)
	}
	j.m = m
	return j, nil
}

// State returns the job's current state.
func (j *Job) State() phases.State { return j.m.Current() }

// Close releases the machine's metric callback; call it once the job's state no
// longer needs reporting.
func (j *Job) Close() { j.m.Close() }

// Run starts the job and calls work until an attempt succeeds or the attempts
// run out. It is one trace: a root span "job <name>", a span per transition and
// a span "attempt <n>" per call of work. It returns nil in succeeded, the last
// attempt's error in failed, or an error matching ErrCancelled (and the
// context's error) when ctx ended first: the job is then cancelled into failed.
// Run is meant to be called once.
func (j *Job) Run(ctx context.Context, work func(ctx context.Context, attempt int) error) (err error) {
	ctx, root := j.tracer.Start(ctx, "job "+j.name, trace.WithNewRoot())
	defer func() {
		root.SetAttributes(attribute.String("job.outcome", string(j.m.Current())))
		if err != nil {
			root.SetStatus(codes.Error, err.Error())
		}
		root.End()
	}()
	if err := j.m.Fire(ctx, Start); err != nil {
		return err
	}
	for {
		if ctx.Err() != nil {
			cause := fmt.Errorf("%w: %w", ErrCancelled, ctx.Err())
			// The machine ignores ctx's cancellation: the transition still happens.
			if err := j.m.FireWithCause(ctx, Cancel, cause); err != nil {
				return errors.Join(cause, err)
			}
			return cause
		}
		j.attempts++
		werr := j.attempt(ctx, work)
		if werr == nil {
			return j.m.Fire(ctx, Succeed)
		}
		if err := j.m.FireWithCause(ctx, Fail, werr); err != nil {
			return errors.Join(werr, err)
		}
		if j.m.Current() == Failed {
			return werr
		}
		if err := j.m.Fire(ctx, Retry); err != nil {
			return err
		}
	}
}

// attempt runs work once under its own span, as the lifecycle does for a phase.
func (j *Job) attempt(ctx context.Context, work func(context.Context, int) error) error {
	ctx, span := j.tracer.Start(ctx, fmt.Sprintf("attempt %d", j.attempts),
		trace.WithAttributes(lifecycle.AttrState.String(string(Running)), attribute.Int("job.attempt", j.attempts)))
	defer span.End()
	err := work(ctx, j.attempts)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}
