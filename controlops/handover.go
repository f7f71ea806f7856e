package controlops

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxHandedNonces bounds the nonces a HandOver carries, so that it fits in one
// environment variable (at most about 37 KB). Past it the not-before time
// moves forward instead (see Daemon.HandOver).
const MaxHandedNonces = 256

// HandOver is what one process of an instance passes to the next one (a
// restart), outside Redis, so that the next process accepts the ops the first
// left unread and none that it handled, whatever happened to Redis meanwhile.
// The lifecycle passes it in the environment of the exec'd process
// (SG_RESTART_NOT_BEFORE, SG_RESTART_NONCES): Redis cannot write it, and
// nothing read from Redis widens what the next process accepts.
type HandOver struct {
	// NotBefore replaces the next process's start time in the stale check:
	// ops issued before NotBefore - skew are rejected as stale.
	NotBefore time.Time
	// Nonces are the ops the first process handled that the next one would
	// not reject as stale or expired: the next process remembers them.
	Nonces []HandedNonce
}

// HandedNonce is one nonce of a HandOver.
type HandedNonce struct {
	Nonce string
	// Issued is the op's issued_at.
	Issued time.Time
	// Expires is when the op's window closes (issued_at + ttl_ms + skew).
	Expires time.Time
}

// HandOver returns what the next process of this instance needs: a not-before
// time and the nonces this daemon remembers that the next process could
// otherwise accept. Call it once the daemon has stopped reading (after Stop);
// the lifecycle calls it before it execs the next process.
//
// The not-before time is when this daemon stopped reading (it accepted a
// restart, or Stop was called), or the restart op's issued_at when that is
// earlier, so that ops sent while the instance restarts are executed by the
// next process; but never earlier than this daemon's own not-before, so that
// a chain of restarts never widens what is accepted. The nonces are those of
// every remembered op issued at or after not-before - skew: the restart op and
// any op issued around it. When there are more than MaxHandedNonces, the
// newest are kept and the not-before time moves just past the others, which
// the next process then rejects as stale.
func (d *Daemon) HandOver() HandOver {
	now := d.cfg.clock.Now()
	d.mu.Lock()
	nb, issued := d.readUntil, d.restartIssued
	d.mu.Unlock()
	if nb.IsZero() {
		nb = now
	}
	if !issued.IsZero() && issued.Before(nb) {
		nb = issued
	}
	if nb.Before(d.notBefore) {
		nb = d.notBefore
	}
	nb = ceilMilli(nb) // the environment carries milliseconds: never round down
	ns := d.mem.issuedSince(nb.Add(-d.cfg.skew), now)
	slices.SortFunc(ns, func(a, b HandedNonce) int {
		return cmp.Or(b.Issued.Compare(a.Issued), strings.Compare(a.Nonce, b.Nonce))
	})
	if len(ns) > MaxHandedNonces {
		nb = ceilMilli(ns[MaxHandedNonces].Issued.Add(d.cfg.skew + time.Millisecond))
		ns = ns[:MaxHandedNonces]
	}
	return HandOver{NotBefore: nb, Nonces: ns}
}

func ceilMilli(t time.Time) time.Time {
	if r := t.Truncate(time.Millisecond); !r.Equal(t) {
		return r.Add(time.Millisecond)
	}
	return t
}

// FormatNonces writes ns as "<nonce>:<issued unix ms>:<expires unix ms>",
// comma-separated: the form ParseNonces reads (SG_RESTART_NONCES).
func FormatNonces(ns []HandedNonce) string {
	var b strings.Builder
	for i, n := range ns {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n.Nonce)
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(n.Issued.UnixMilli(), 10))
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(n.Expires.UnixMilli(), 10))
	}
	return b.String()
}

// ParseNonces reads what FormatNonces wrote; "" is no nonces. It refuses more
// than MaxHandedNonces, and nonces or times Parse would refuse.
func ParseNonces(s string) ([]HandedNonce, error) {
	if s == "" {
		return nil, nil
	}
	items := strings.Split(s, ",")
	if len(items) > MaxHandedNonces {
		return nil, fmt.Errorf("%d nonces: want at most %d", len(items), MaxHandedNonces)
	}
	out := make([]HandedNonce, 0, len(items))
	for i, it := range items {
		parts := strings.Split(it, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("item %d: want <nonce>:<issued unix ms>:<expires unix ms>", i+1)
		}
		n := parts[0]
		if len(n) < MinNonceLen || len(n) > MaxNonceLen || !nonceRE.MatchString(n) {
			return nil, fmt.Errorf("item %d: nonce: want %d-%d characters of A-Z, a-z, 0-9, '_' or '-'", i+1, MinNonceLen, MaxNonceLen)
		}
		var ms [2]int64
		for j, p := range parts[1:] {
			v, err := strconv.ParseInt(p, 10, 64)
			if err != nil || v <= 0 || v > 1e14 {
				return nil, fmt.Errorf("item %d: %q: want unix milliseconds", i+1, p)
			}
			ms[j] = v
		}
		out = append(out, HandedNonce{Nonce: n, Issued: time.UnixMilli(ms[0]), Expires: time.UnixMilli(ms[1])})
	}
	return out, nil
}
