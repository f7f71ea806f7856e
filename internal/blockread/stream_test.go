package blockread_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/redistest"
)

var lim = blockread.Limits{Entry: 4096, Fields: 32, Reply: 64 << 10}

// big is the oversized field of these tests: large enough that loading it
// once shows in the allocation count, small enough to write in a blink.
const big = 32 << 20

// allocated returns the bytes the test process has allocated so far, every
// goroutine included (runtime.MemStats.TotalAlloc).
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

func xadd(t testing.TB, rdb redis.UniversalClient, key string, values ...any) string {
	t.Helper()
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: key, Values: values}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// waitBlocked waits until Redis has n clients blocked.
func waitBlocked(t *testing.T, rdb redis.UniversalClient, n int) {
	t.Helper()
	want := "blocked_clients:" + string(rune('0'+n)) + "\r\n"
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(rdb.Info(context.Background(), "clients").Val(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %d blocked client(s): %s", n, rdb.Info(context.Background(), "clients").Val())
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// The measurement can fail: an unguarded XREAD of the entry allocates it.
func TestAnUnguardedReadAllocatesTheWholeEntry(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	xadd(t, rdb, "s", "op", "pull", "args", strings.Repeat("x", big))
	before := allocated()
	if err := rdb.XRead(context.Background(), &redis.XReadArgs{Streams: []string{"s", "0-0"}, Count: 16, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	if got := allocated() - before; got < big {
		t.Fatalf("an unguarded XREAD allocated %d bytes, want at least the %d of the field", got, big)
	}
}

func TestAStreamReturnsAnOversizedEntryAsItsIDSizeAndShortFieldsWithoutLoadingIt(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	payload := strings.Repeat("x", big)
	id1 := xadd(t, rdb, "s", "op", "pull", "n", "1")
	id2 := xadd(t, rdb, "s", "op", "restart", "id", "evil", "args", payload)
	id3 := xadd(t, rdb, "s", "op", "pull", "n", "3")
	s := blockread.NewStream(rdb, "s", blockread.NoRetry, lim, time.Second)
	t.Cleanup(func() { _ = s.Close() })
	if !s.Own() {
		t.Fatal("a *redis.Client was not copied")
	}
	before := allocated()
	p, err := s.Read(context.Background(), "0-0", 16, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := allocated() - before
	t.Logf("read 3 entries, one of %d bytes: %d bytes allocated, %d replies refused", big, got, s.Refused())
	if got > 4<<20 {
		t.Fatalf("the read allocated %d bytes: the oversized entry was loaded", got)
	}
	if s.Refused() != 1 {
		t.Fatalf("%d replies refused, want 1 (the XREAD)", s.Refused())
	}
	if len(p.Entries) != 3 || p.Entries[0].ID != id1 || p.Entries[1].ID != id2 || p.Entries[2].ID != id3 {
		t.Fatalf("page %+v, want the three entries in order", p)
	}
	e := p.Entries[1]
	wantSize := int64(len("op") + len("restart") + len("id") + len("evil") + len("args") + big)
	if !e.Oversized || e.Size != wantSize || e.Fields != 3 || e.Values["id"] != "evil" || e.Values["op"] != "restart" || len(e.Values) != 2 {
		t.Fatalf("oversized entry %+v, want size %d, 3 fields, the short fields id and op only", e, wantSize)
	}
	if p.Entries[0].Oversized || p.Entries[2].Values["n"] != "3" {
		t.Fatalf("the small entries: %+v", p.Entries)
	}
	// The next entry comes through a blocked XREAD again: no second refusal,
	// and the reader is blocked in Redis before it is added.
	done := make(chan blockread.Page, 1)
	go func() {
		p, err := s.Read(context.Background(), id3, 16, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- p
	}()
	waitBlocked(t, rdb, 1)
	id4 := xadd(t, rdb, "s", "op", "pull", "n", "4")
	if p := <-done; len(p.Entries) != 1 || p.Entries[0].ID != id4 || s.Refused() != 1 {
		t.Fatalf("after the oversized entry: %+v, %d refused; want entry %s through one blocked XREAD", p, s.Refused(), id4)
	}
	// The caller's own client is not capped.
	if v, err := rdb.XRange(context.Background(), "s", id2, id2).Result(); err != nil || len(v) != 1 || len(v[0].Values["args"].(string)) != big {
		t.Fatalf("the caller's client reading the entry: %v", err)
	}
}

// The entry arrives while the read is blocked: what XREAD BLOCK would hand
// go-redis whole.
func TestABlockedReadRefusesAnOversizedEntryThatArrivesAndResumesBlocking(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	start := xadd(t, rdb, "s", "n", "0")
	payload := strings.Repeat("y", big)
	s := blockread.NewStream(rdb, "s", blockread.Retry, lim, time.Second)
	t.Cleanup(func() { _ = s.Close() })
	type result struct {
		p     blockread.Page
		err   error
		alloc uint64
	}
	done := make(chan result, 1)
	before := allocated()
	go func() {
		p, err := s.Read(context.Background(), start, 16, 10*time.Second)
		done <- result{p, err, allocated() - before}
	}()
	waitBlocked(t, rdb, 1)
	id := xadd(t, rdb, "s", "args", payload)
	r := <-done
	t.Logf("blocked read of a %d-byte entry: %d bytes allocated (the XADD's included)", big, r.alloc)
	if r.err != nil || len(r.p.Entries) != 1 || r.p.Entries[0].ID != id || !r.p.Entries[0].Oversized {
		t.Fatalf("%+v %v, want entry %s oversized", r.p, r.err, id)
	}
	if r.alloc > 8<<20 {
		t.Fatalf("%d bytes allocated: the entry was loaded", r.alloc)
	}
}

func TestScanPagesByBytesAndReadsBackwards(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	var ids []string
	for i := range 10 {
		v := strings.Repeat("z", 3000)
		if i == 4 {
			v = strings.Repeat("z", 5000) // over lim.Entry
		}
		ids = append(ids, xadd(t, rdb, "s", "i", string(rune('0'+i)), "v", v))
	}
	small := blockread.Limits{Entry: 4096, Fields: 32, Reply: 10000}
	p, err := blockread.Scan(context.Background(), rdb, "s", "-", "+", 100, false, small)
	if err != nil {
		t.Fatal(err)
	}
	// 3 entries of about 3 KB fit in 10,000 bytes, with the oversized one
	// counted small.
	if !p.More || len(p.Entries) != 3 || p.Last() != ids[2] {
		t.Fatalf("first page: %d entries, more %v, last %s", len(p.Entries), p.More, p.Last())
	}
	var all []blockread.Entry
	for from := "-"; ; {
		p, err := blockread.Scan(context.Background(), rdb, "s", from, "+", 100, false, small)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Entries...)
		if !p.More {
			break
		}
		from = "(" + p.Last()
	}
	if len(all) != 10 || !all[4].Oversized || all[4].Values["i"] != "4" || all[3].Oversized || all[5].Values["v"] != strings.Repeat("z", 3000) {
		t.Fatalf("paged scan: %d entries %+v", len(all), all)
	}
	p, err = blockread.Scan(context.Background(), rdb, "s", "+", "("+ids[5], 3, true, small)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 3 || p.Entries[0].ID != ids[9] || p.Entries[2].ID != ids[7] {
		t.Fatalf("reverse scan: %+v", p.Entries)
	}
	// Too many fields is oversized too.
	many := []any{}
	for i := range 40 {
		many = append(many, "f"+string(rune('a'+i%26))+string(rune('a'+i/26)), "v")
	}
	idMany := xadd(t, rdb, "m", many...)
	p, err = blockread.Scan(context.Background(), rdb, "m", "-", "+", 10, false, small)
	if err != nil || len(p.Entries) != 1 || p.Entries[0].ID != idMany || !p.Entries[0].Oversized || p.Entries[0].Fields != 40 || len(p.Entries[0].Values) != blockread.ShortFields {
		t.Fatalf("an entry of 40 fields: %+v %v", p, err)
	}
}

func TestLastIDNeverLoadsTheLastEntry(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	if id, err := blockread.LastID(context.Background(), rdb, "absent"); err != nil || id != "0-0" {
		t.Fatalf("absent stream: %q %v", id, err)
	}
	id := xadd(t, rdb, "s", "args", strings.Repeat("q", big))
	before := allocated()
	got, err := blockread.LastID(context.Background(), rdb, "s")
	if err != nil || got != id {
		t.Fatalf("LastID %q %v, want %s", got, err, id)
	}
	if a := allocated() - before; a > 1<<20 {
		t.Fatalf("LastID allocated %d bytes", a)
	}
}

// The scripts are read-only (EVALSHA_RO): a user allowed only to read the
// stream (%R~) runs them, as an ACL reader role would.
func TestScanRunsForAUserWhoMayOnlyReadTheStream(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	xadd(t, rdb, "s", "a", "b")
	if err := rdb.Do(context.Background(), "ACL", "SETUSER", "reader", "on", ">pw", "+evalsha_ro", "+eval_ro",
		"+xrange", "+xrevrange", "+xread", "%R~s").Err(); err != nil {
		t.Fatal(err)
	}
	ro := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "reader", Password: "pw"})
	t.Cleanup(func() { _ = ro.Close() })
	p, err := blockread.Scan(context.Background(), ro, "s", "-", "+", 10, false, lim)
	if err != nil || len(p.Entries) != 1 {
		t.Fatalf("Scan as a read-only user: %+v %v", p, err)
	}
	if _, err := blockread.LastID(context.Background(), ro, "s"); err != nil {
		t.Fatalf("LastID as a read-only user: %v", err)
	}
}

// Through a client it cannot copy a Stream never blocks in Redis: it polls
// with Scan, and an oversized entry is still never loaded.
func TestAStreamOnAClientItCannotCopyPollsWithScan(t *testing.T) {
	rdb := sharedClient{redistest.Server(t).Client(t)}
	s := blockread.NewStream(rdb, "s", blockread.Retry, lim, 50*time.Millisecond)
	if s.Own() {
		t.Fatal("a wrapper was copied")
	}
	t.Cleanup(func() { _ = s.Close() })
	start := time.Now()
	p, err := s.Read(context.Background(), "0-0", 16, time.Hour)
	if err != nil || len(p.Entries) != 0 {
		t.Fatalf("empty stream: %+v %v", p, err)
	}
	if el := time.Since(start); el < 50*time.Millisecond || el > 5*time.Second {
		t.Fatalf("an empty poll returned after %v, want the poll interval (50ms)", el)
	}
	xadd(t, rdb, "s", "args", strings.Repeat("x", big))
	before := allocated()
	p, err = s.Read(context.Background(), "0-0", 16, time.Hour)
	if err != nil || len(p.Entries) != 1 || !p.Entries[0].Oversized {
		t.Fatalf("%+v %v", p, err)
	}
	if a := allocated() - before; a > 1<<20 {
		t.Fatalf("the poll allocated %d bytes", a)
	}
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Close closed the caller's client: %v", err)
	}
}

type sharedClient struct{ *redis.Client }

// On Redis Cluster the guard is on the connections of every node the copy
// talks to (they are made after the copy).
func TestTheGuardIsOnEveryNodeOfAClusterCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	cc := redistest.Cluster(t).Client(t)
	for _, key := range []string{"{a}s", "{b}s", "{c}s"} {
		xadd(t, cc, key, "args", strings.Repeat("c", 1<<20))
		s := blockread.NewStream(cc, key, blockread.Retry, lim, time.Second)
		p, err := s.Read(context.Background(), "0-0", 16, time.Second)
		_ = s.Close()
		if err != nil || len(p.Entries) != 1 || !p.Entries[0].Oversized || s.Refused() != 1 {
			t.Fatalf("%s: %+v %v, %d refused; want the entry refused by the guard and reported", key, p, err, s.Refused())
		}
	}
	// A copy's guard refuses what the caller's client reads whole.
	reader, own := blockread.NewClient(cc, blockread.Retry, lim)
	defer reader.Close()
	err := reader.XRange(context.Background(), "{a}s", "-", "+").Err()
	if !own || !errors.Is(err, blockread.ErrTooLarge) {
		t.Fatalf("XRANGE through the copy: %v, want ErrTooLarge", err)
	}
	if err := cc.XRange(context.Background(), "{a}s", "-", "+").Err(); err != nil {
		t.Fatalf("XRANGE through the caller's client: %v", err)
	}
}
