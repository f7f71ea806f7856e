package main

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// producer posts an order to the API every few milliseconds until stopped,
// counting the orders accepted before and after the stop signal.
type producer struct {
	signalled          atomic.Bool
	before, after      atomic.Int64 // accepted (202)
	failedBeforeSignal atomic.Int64
	stop               chan struct{}
	stopOnce           sync.Once
	wg                 sync.WaitGroup
}

func produce(base string) *producer {
	p := &producer{stop: make(chan struct{})}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	p.wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			after := p.signalled.Load()
			resp, err := c.Post(base+"/orders", "application/json", strings.NewReader(`{"item":"tea","qty":1}`))
			if err == nil {
				resp.Body.Close()
			}
			switch {
			case err == nil && resp.StatusCode == http.StatusAccepted && after:
				p.after.Add(1)
			case err == nil && resp.StatusCode == http.StatusAccepted:
				p.before.Add(1)
			case !after:
				p.failedBeforeSignal.Add(1)
			}
		}
	})
	return p
}

// close stops the producer and waits for it; a second call does nothing.
func (p *producer) close() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// A stop with orders flowing and a drain delay: the worker takes no order
// from the stop on, finishes the one in hand, and the API goes on taking
// orders through the delay. No order is half done: each is processed and
// acked, or pending without effect (at most one: a read the stop cut short
// as Redis delivered it), or unread.
func TestADrainWithOrdersFlowingLeavesNoOrderHalfProcessed(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server")
	}
	srv := redistest.Server(t)
	admin := srv.Client(t)
	// Orders come every 10ms and take 50ms each: a backlog grows, and the
	// worker always has one in hand.
	p := start(t, "REDIS_URL="+srv.URL(), "SG_DRAIN_DELAY=2s", "ORDERS_WORK=50ms")
	base := "http://" + p.WaitForMatch(t, listening)[1]
	p.WaitFor(t, takingNew)
	prod := produce(base)
	defer prod.close()
	poll(t, 20*time.Second, "five orders processed", func() bool {
		n, _ := admin.HLen(context.Background(), processedKey).Result()
		return n >= 5
	})

	prod.signalled.Store(true)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	prod.close()

	out := p.Output()
	m := stoppedAt.FindStringSubmatchIndex(out)
	if m == nil {
		t.Fatalf("the worker never said it stopped taking orders:\n%s", out)
	}
	last := out[m[2]:m[3]]
	// At the stop, not after the drain delay.
	if delayOver := strings.Index(out, "from=draining to=stopping_daemons"); delayOver < 0 || m[0] > delayOver {
		t.Errorf("the worker stopped taking orders after the drain delay (or there was none): at byte %d, the delay over at %d", m[0], delayOver)
	}

	st := checkNothingHalfDone(t, admin)
	t.Logf("orders: %d processed and acked, %d pending, %d unread; API: %d accepted before the signal, %d during the drain delay",
		st.acked, st.pending, st.unread, prod.before.Load(), prod.after.Load())
	// The order in hand at the stop was finished.
	if by, err := admin.HGet(context.Background(), processedKey, last).Result(); err != nil || by != "o-1" {
		t.Errorf("the last order taken, %s, was not finished: processed by %q (%v)", last, by, err)
	}
	// Nothing taken after the worker stopped but, at most, an entry Redis
	// delivered as the read was cut short, pending.
	switch {
	case st.pending > 1:
		t.Errorf("%d orders pending (%v), want at most one", st.pending, st.pendingIDs)
	case st.pending == 1 && st.lastDelivered != st.pendingIDs[0]:
		t.Errorf("pending %s, last delivered %s: an order was taken after the one cut short", st.pendingIDs[0], st.lastDelivered)
	case st.pending == 0 && st.lastDelivered != last:
		t.Errorf("last delivered %s, the worker's last %s: an order was taken after the worker stopped", st.lastDelivered, last)
	}
	if st.unread == 0 || prod.after.Load() == 0 {
		t.Errorf("%d orders unread and %d taken during the drain delay: want both > 0 (the API serves through the delay, the worker takes nothing then)", st.unread, prod.after.Load())
	}
	if n := prod.failedBeforeSignal.Load(); n != 0 {
		t.Errorf("%d orders refused before the signal", n)
	}
}

// Without a drain delay, Run's context ends with the stop: the order in
// hand is left pending, with no effect, and the next start of the same
// instance processes it first.
func TestAStopWithoutADrainDelayLeavesTheOrderInHandForTheNextStart(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server")
	}
	srv := redistest.Server(t)
	admin := srv.Client(t)
	ctx := context.Background()
	p := start(t, "REDIS_URL="+srv.URL(), "ORDERS_WORK=1h")
	p.WaitFor(t, takingNew)
	id, err := admin.XAdd(ctx, &redis.XAddArgs{Stream: streamKey, Values: []any{"item", "tea", "qty", 1}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "the order delivered to the worker", func() bool {
		p, err := admin.XPending(ctx, streamKey, group).Result()
		return err == nil && p.Count == 1
	})
	began := time.Now()
	_ = p.Signal(syscall.SIGTERM)
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	// An hour of work is not waited for; 10s leaves a busy machine room.
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the stop took %v with an order in hand, want it cut short", took)
	}
	// Almost always the worker has the order in hand; when the signal beat
	// the read's reply (Redis had delivered it), the read was cut short.
	// Either way the order is pending, with no effect.
	out := p.Output()
	inHand := strings.Contains(out, `msg="worker: stopped with an order in hand: it stays pending, for the next start" service=orders instance=o-1 order=`+id)
	cutShort := strings.Contains(out, `msg="worker: stopped taking orders" service=orders instance=o-1 last="" `)
	if !inHand && !cutShort {
		t.Errorf("the worker said neither that it stopped with order %s in hand nor that its read was cut short:\n%s", id, out)
	}
	t.Logf("order in hand at the stop: %v (else delivered as the read was cut short)", inHand)
	if st := checkNothingHalfDone(t, admin); st.pending != 1 || st.acked != 0 {
		t.Fatalf("%+v, want the order pending, not acked", st)
	}

	q := start(t, "REDIS_URL="+srv.URL())
	poll(t, 20*time.Second, "the pending order processed by the next start", func() bool {
		by, _ := admin.HGet(ctx, processedKey, id).Result()
		return by == "o-1"
	})
	_ = q.Signal(syscall.SIGTERM)
	if code := q.Wait(t); code != 0 {
		t.Fatalf("second start: exit code %d, want 0", code)
	}
	if st := checkNothingHalfDone(t, admin); st.pending != 0 || st.acked != 1 {
		t.Errorf("%+v, want the order acked", st)
	}
}

var logTime = regexp.MustCompile(`^time=(\S+) `)

// lineTime returns the time of the first line of out that contains text.
func lineTime(t *testing.T, out, text string) time.Time {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, text) {
			if m := logTime.FindStringSubmatch(line); m != nil {
				if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
					return at
				}
			}
		}
	}
	t.Fatalf("no line with %q and a time", text)
	return time.Time{}
}

// The worker's read blocks for 30s when no order comes; a stop ends it at
// once (BlockingRedis), not at the end of the BLOCK: the whole stop, the
// shutdown steps and the process's exit included, is bounded well below it.
func TestTheWorkersBlockedReadEndsPromptlyAtStop(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server")
	}
	srv := redistest.Server(t)
	const block = 30 * time.Second
	p := start(t, "REDIS_URL="+srv.URL(), "ORDERS_BLOCK="+block.String())
	p.WaitFor(t, takingNew)
	waitBlocked(t, srv.Client(t))
	began := time.Now()
	_ = p.Signal(syscall.SIGTERM)
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	took := time.Since(began)
	out := p.Output()
	// Main logs the signal after it asked for the stop: the worker's line
	// may come first. Log times have a millisecond's resolution.
	apart := lineTime(t, out, `msg="worker: stopped taking orders"`).Sub(lineTime(t, out, `msg="signal received`))
	t.Logf("with the worker blocked in XREADGROUP BLOCK %v: signal to exit %v; the worker's stop line %v from Main's signal line", block, took, apart)
	// The bound leaves a busy machine (two CPU hogs, -race elsewhere) room.
	if took > 5*time.Second {
		t.Errorf("the stop took %v, want < 5s: the blocked read held it", took)
	}
}
