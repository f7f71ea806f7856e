package registry_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

func TestEventsStreamIsCappedAndReadableInOrder(t *testing.T) {
	// A real server: approximate (MAXLEN ~) trimming is what Redis does with
	// whole stream nodes, which miniredis does not model.
	srv := redistest.Server(t)
	c := srv.Client(t)
	const maxLen, n = 200, 2000
	r := registry.New(c, registry.WithEventsMaxLen(maxLen))
	m := newMember(t, r, entry("api", "i1", "init"))
	for i := range n {
		m.Update(entry("api", "i1", "running"), &registry.Event{Event: "e", From: "a", To: fmt.Sprint(i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	xlen, err := c.XLen(ctx, registry.EventsKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Redis trims whole nodes of stream-node-max-entries (100) entries.
	if xlen < maxLen || xlen > maxLen+100 {
		t.Fatalf("stream holds %d of %d events, want about %d (MAXLEN ~)", xlen, n, maxLen)
	}

	// Reading in pages from the start returns the newest xlen events in
	// order, each once.
	var got []registry.Event
	last := "0"
	for {
		evs, next, err := r.Events(ctx, last, 64, 0)
		if err != nil {
			t.Fatalf("Events(%s): %v", last, err)
		}
		if len(evs) == 0 {
			if next != last {
				t.Fatalf("Events with nothing new moved the cursor from %s to %s", last, next)
			}
			break
		}
		got = append(got, evs...)
		last = next
	}
	if int64(len(got)) != xlen {
		t.Fatalf("paged through %d events, stream holds %d", len(got), xlen)
	}
	for i, ev := range got {
		if want := fmt.Sprint(n - len(got) + i); ev.To != want {
			t.Fatalf("event %d goes to %s, want %s", i, ev.To, want)
		}
	}
}

func TestEventsFromDollarSeeOnlyNewEventsWithoutGaps(t *testing.T) {
	mr := miniredis.RunT(t)
	r := registry.New(newClient(t, mr.Addr()))
	ctx := context.Background()
	old := registry.Event{Service: "api", Instance: "i1", Event: "old", From: "a", To: "b"}
	if _, err := r.Publish(ctx, old); err != nil {
		t.Fatal(err)
	}
	evs, next, err := r.Events(ctx, "$", 10, 0)
	if err != nil || len(evs) != 0 {
		t.Fatalf(`Events("$") = %v, %v; want nothing yet`, evs, err)
	}
	// Published between two calls: a plain "$" on the second call would miss it.
	at := time.Date(2025, 5, 6, 7, 8, 9, 10, time.UTC)
	want := registry.Event{Service: "api", Instance: "i2", Event: "ping_failed", From: "connecting", To: "configuring",
		Guard: "not redis_required", Phase: "3", Degraded: true, Time: at, Error: "dial tcp: refused", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}
	id, err := r.Publish(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	evs, next2, err := r.Events(ctx, next, 10, 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("Events(%s) = %v, %v; want the one new event", next, evs, err)
	}
	want.ID = id
	if evs[0] != want {
		t.Fatalf("event read back = %+v\nwant %+v", evs[0], want)
	}
	if next2 != id {
		t.Fatalf("next = %s, want the event's id %s", next2, id)
	}
}

func TestEventsBlockUntilTimeoutWhenNothingArrives(t *testing.T) {
	srv := redistest.Server(t)
	r := registry.New(srv.Client(t))
	start := time.Now()
	evs, next, err := r.Events(context.Background(), "$", 10, 100*time.Millisecond)
	if err != nil || len(evs) != 0 || next != "0-0" {
		t.Fatalf(`Events("$", block) on an empty stream = %v, %q, %v; want nothing, "0-0", nil`, evs, next, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("returned after %v, before the block of 100ms", d)
	}
}
