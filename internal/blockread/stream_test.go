package blockread_test

import (
	"context"
	"errors"
	"runtime"
	"strconv"
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

func TestAStreamReturnsAnOversizedEntryAsItsIDAndSizeWithoutLoadingIt(t *testing.T) {
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
	t.Logf("read past an entry of %d bytes: %d bytes allocated, %d replies refused", big, got, s.Refused())
	if got > 4<<20 {
		t.Fatalf("the read allocated %d bytes: the oversized entry was loaded", got)
	}
	if s.Refused() != 1 {
		t.Fatalf("%d replies refused, want 1 (the XREAD)", s.Refused())
	}
	// The page ends with the refused entry: the one before it read again,
	// the one after it left to the next read.
	if len(p.Entries) != 2 || p.Entries[0].ID != id1 || p.Entries[0].Oversized || p.Entries[1].ID != id2 {
		t.Fatalf("page %+v, want %s and %s", p, id1, id2)
	}
	if e := p.Entries[1]; !e.Oversized || e.Size != big || e.Values != nil {
		t.Fatalf("oversized entry %+v, want its refused field's size %d and no values", e, big)
	}
	p, err = s.Read(context.Background(), id2, 16, time.Second)
	if err != nil || len(p.Entries) != 1 || p.Entries[0].ID != id3 || p.Entries[0].Values["n"] != "3" {
		t.Fatalf("the next read: %+v %v, want %s", p, err, id3)
	}
	// The next entry comes through a blocked XREAD: no second refusal, and
	// the reader is blocked in Redis before it is added.
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

// An entry refused for its number of fields, and a reply refused for its
// bytes although each entry fits: the first is oversized, the others are all
// read, over several reads.
func TestAStreamTellsAnEntryWithTooManyFieldsFromAPageTooLargeForOneReply(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	small := blockread.Limits{Entry: 4096, Fields: 32, Reply: 8 << 10} // the guard's budget: 88 KiB
	var want []string
	for i := range 40 {
		want = append(want, xadd(t, rdb, "s", "i", strconv.Itoa(i), "v", strings.Repeat("m", 4000)))
	}
	many := []any{}
	for i := range 5000 {
		many = append(many, "f"+strconv.Itoa(i), "")
	}
	fields := xadd(t, rdb, "s", many...)
	last := xadd(t, rdb, "s", "i", "last")
	s := blockread.NewStream(rdb, "s", blockread.Retry, small, time.Second)
	t.Cleanup(func() { _ = s.Close() })
	var got []blockread.Entry
	for pos := "0-0"; pos != last; {
		p, err := s.Read(context.Background(), pos, 100, time.Second)
		if err != nil || len(p.Entries) == 0 {
			t.Fatalf("read after %s: %+v %v", pos, p, err)
		}
		got = append(got, p.Entries...)
		pos = p.Last()
	}
	if len(got) != 42 {
		t.Fatalf("%d entries read, want 42", len(got))
	}
	for i, id := range want {
		if got[i].ID != id || got[i].Oversized {
			t.Fatalf("entry %d: %+v, want %s within the limits", i, got[i], id)
		}
	}
	if e := got[40]; e.ID != fields || !e.Oversized || e.Fields != 5000 {
		t.Fatalf("the entry of 5000 fields: %+v", e)
	}
	t.Logf("42 entries in %d refused replies", s.Refused())
}

// Range skips each refused entry and reads on, forward and backward, and
// stops at about its reply budget.
func TestARangeSkipsEveryOversizedEntryAndReadsOn(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	payload := strings.Repeat("r", 1<<20)
	var ids []string
	for i := range 12 {
		v := "small"
		if i%3 == 1 {
			v = payload
		}
		ids = append(ids, xadd(t, rdb, "s", "i", strconv.Itoa(i), "v", v))
	}
	before := allocated()
	p, err := blockread.Range(context.Background(), rdb, "s", "-", "+", 100, false, lim)
	if err != nil {
		t.Fatal(err)
	}
	if a := allocated() - before; a > 2<<20 {
		t.Errorf("%d bytes allocated reading past four entries of 1 MiB", a)
	}
	if len(p.Entries) != 12 || p.More {
		t.Fatalf("%d entries, more %v", len(p.Entries), p.More)
	}
	for i, e := range p.Entries {
		if e.ID != ids[i] || e.Oversized != (i%3 == 1) {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	p, err = blockread.Range(context.Background(), rdb, "s", "+", "("+ids[3], 5, true, lim)
	if err != nil || len(p.Entries) != 5 || p.Entries[0].ID != ids[11] || p.Entries[4].ID != ids[7] || !p.Entries[1].Oversized || !p.Entries[4].Oversized {
		t.Fatalf("backwards: %+v %v", p, err)
	}
	// The budget: 300 KB of entries of 3 KB, more than one reply may hold
	// (the guard's 200 KiB): the page stops with what the first held.
	for range 100 {
		xadd(t, rdb, "b", "v", strings.Repeat("b", 3000))
	}
	p, err = blockread.Range(context.Background(), rdb, "b", "-", "+", 100, false, lim)
	if err != nil || !p.More || len(p.Entries) < 20 || len(p.Entries) > 70 {
		t.Fatalf("a range of 300 KB: %d entries, more %v, %v; want one reply's worth and more", len(p.Entries), p.More, err)
	}
	for _, e := range p.Entries {
		if e.Oversized {
			t.Fatalf("entry %s of 3 KB oversized", e.ID)
		}
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

// A position is Redis's clock: reading from it returns what is added after,
// and reading it reads no entry.
func TestPositionReadsNoEntryAndEveryLaterEntryFollowsIt(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	xadd(t, rdb, "s", "args", strings.Repeat("q", big))
	before := allocated()
	pos, err := blockread.Position(context.Background(), rdb, "s")
	if err != nil {
		t.Fatal(err)
	}
	if a := allocated() - before; a > 64<<10 {
		t.Fatalf("Position allocated %d bytes", a)
	}
	next := xadd(t, rdb, "s", "n", "1")
	s := blockread.NewStream(rdb, "s", blockread.Retry, lim, time.Second)
	t.Cleanup(func() { _ = s.Close() })
	p, err := s.Read(context.Background(), pos, 16, time.Second)
	if err != nil || len(p.Entries) == 0 || p.Last() != next {
		t.Fatalf("read from %s: %+v %v, want %s last", pos, p, err, next)
	}
	// Through a wrapper, the same position by a script that holds the key.
	if pos2, err := blockread.Position(context.Background(), sharedClient{rdb}, "s"); err != nil || pos2 < pos {
		t.Fatalf("Position through a wrapper: %q %v (first %q)", pos2, err, pos)
	}
}

// The guarded path needs no script: a user allowed only to read the stream
// and the clock reads past an oversized entry.
func TestAStreamNeedsNoScriptPermission(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	xadd(t, rdb, "s", "a", "b")
	xadd(t, rdb, "s", "args", strings.Repeat("x", 1<<20))
	last := xadd(t, rdb, "s", "c", "d")
	if err := rdb.Do(context.Background(), "ACL", "SETUSER", "reader", "on", ">pw", "+xrange", "+xrevrange", "+xread", "+time", "%R~s").Err(); err != nil {
		t.Fatal(err)
	}
	ro := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "reader", Password: "pw"})
	t.Cleanup(func() { _ = ro.Close() })
	s := blockread.NewStream(ro, "s", blockread.Retry, lim, time.Second)
	t.Cleanup(func() { _ = s.Close() })
	if _, err := blockread.Position(context.Background(), s.Client(), "s"); err != nil {
		t.Fatalf("Position: %v", err)
	}
	var got []blockread.Entry
	for pos := "0-0"; pos != last; {
		p, err := s.Read(context.Background(), pos, 16, time.Second)
		if err != nil {
			t.Fatalf("Read as a user without scripts: %v", err)
		}
		got = append(got, p.Entries...)
		pos = p.Last()
	}
	if len(got) != 3 || !got[1].Oversized {
		t.Fatalf("%+v", got)
	}
}

// The script is read-only (EVALSHA_RO): a user allowed only to read the
// stream (%R~) runs it, as an ACL reader role would, through a client that
// cannot be copied.
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
