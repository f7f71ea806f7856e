package optrack

import (
	"context"
	"crypto/rand"

	"go.opentelemetry.io/otel/trace"
)

// Trace starts an op's trace: ctx with a W3C trace context of a random
// trace id and span id, sampled and remote, which controlops.Client.Send
// carries in the op's traceparent. The sender records no span of its own
// (sgctl links no exporter): each instance's handling of the op is a child
// of this span id, so the instances' spans form one trace, whose id it
// returns for the sender to print. A rolling restart sends every op with
// the same context: one rollout, one trace.
func Trace(ctx context.Context) (context.Context, trace.TraceID) {
	var b [24]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], b[:16])
	copy(sid[:], b[16:])
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	return trace.ContextWithRemoteSpanContext(ctx, sc), tid
}
