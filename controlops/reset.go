package controlops

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/stargazer/lifecycle/internal/blockread"
)

// A stream that Redis lost (FLUSHALL, a restart without persistence, a
// failover that lost writes, a DEL) starts its ids again from the server's
// clock. An XREAD after the last entry the daemon handled then misses every
// new entry whose id is not above it: one added in the same millisecond as
// that entry gets its very id, and one added on a server whose clock is
// behind gets a lower one. Such an op would be answered by nobody, ever. So
// after every read the daemon looks at the entry at its position: when it
// is another entry than the one it handled there, or gone while nothing
// follows it, the stream was reset, and the daemon reads the new stream
// from its start. What it handled before is not run twice: the replay
// memory and the not-before time reject it, with a result.

// entryMark tells one entry from another written at the same id: the op's
// id and nonce, and the entry's size.
func entryMark(e blockread.Entry) string {
	id, _ := e.Values[FieldID].(string)
	nonce, _ := e.Values[FieldNonce].(string)
	return strconv.FormatInt(e.Size, 10) + "\x00" + id + "\x00" + nonce
}

// justBefore returns the stream position right before id, so that a read
// after it returns the entry at id first; false for 0-0 or an id that is
// not one.
func justBefore(id string) (string, bool) {
	msPart, seqPart, ok := strings.Cut(id, "-")
	if !ok {
		return "", false
	}
	ms, err1 := strconv.ParseUint(msPart, 10, 64)
	seq, err2 := strconv.ParseUint(seqPart, 10, 64)
	switch {
	case err1 != nil || err2 != nil || ms == 0 && seq == 0:
		return "", false
	case seq > 0:
		return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq-1, 10), true
	default:
		return strconv.FormatUint(ms-1, 10) + "-18446744073709551615", true
	}
}

// entryAt reads the entry at id with a non-blocking XREAD (the one read
// command the instance's role has for its stream) and returns its mark, or
// false when the stream holds no entry at id.
func (d *Daemon) entryAt(ctx context.Context, id string) (string, bool, error) {
	from, ok := justBefore(id)
	if !ok {
		return "", false, nil
	}
	p, err := d.stream.Read(ctx, from, 1, 0)
	if err != nil {
		return "", false, err
	}
	if len(p.Entries) == 0 || p.Entries[0].ID != id {
		return "", false, nil
	}
	return entryMark(p.Entries[0]), true, nil
}

// wasReset reports whether the stream no longer holds, at position after,
// the entry the daemon last handled there (mark): another entry has its id,
// or it is gone and the read just made (gotNew: it returned entries) found
// nothing after it. An entry gone while others follow it was trimmed
// (MAXLEN), not reset. A position that is not an entry the daemon saw
// (0-0, or mark "") is never reset.
func (d *Daemon) wasReset(ctx context.Context, after, mark string, gotNew bool) (bool, error) {
	if mark == "" {
		return false, nil
	}
	got, present, err := d.entryAt(ctx, after)
	if err != nil {
		return false, fmt.Errorf("controlops: XREAD %s: %w", StreamKey(d.svc), err)
	}
	if present {
		return got != mark, nil
	}
	return !gotNew, nil
}
