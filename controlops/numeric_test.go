package controlops

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// respell rewrites one field of a signed op's values as a Redis writer
// without the key could.
func respell(v map[string]any, field, value string) map[string]any {
	out := make(map[string]any, len(v))
	for k, x := range v {
		out[k] = x
	}
	out[field] = value
	return out
}

func TestParseRejectsNumericFieldsThatAreNotCanonicalDecimal(t *testing.T) {
	v := validValues()
	ms, ttl := v[FieldIssuedAt].(string), v[FieldTTL].(string)
	for _, c := range []struct{ field, value string }{
		{FieldIssuedAt, "+" + ms},
		{FieldIssuedAt, "00" + ms},
		{FieldIssuedAt, "+00" + ms},
		{FieldIssuedAt, " " + ms},
		{FieldIssuedAt, ms + " "},
		{FieldIssuedAt, "0x" + ms},
		{FieldIssuedAt, ms + ".0"},
		{FieldIssuedAt, "١٧٠٠٠٠٠٠٠٠٠٠٠"}, // Arabic-Indic digits
		{FieldTTL, "0" + ttl},
		{FieldTTL, "+" + ttl},
		{FieldTTL, "-0"},
		{FieldTTL, "3e4"},
		{FieldTTL, "30_000"},
	} {
		_, err := Parse(respell(v, c.field, c.value))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || fe.Value != c.value || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s=%q: got %v, want a FieldError naming the field and the value", c.field, c.value, err)
		}
	}
	if _, err := Parse(respell(v, FieldTTL, "1")); err != nil {
		t.Errorf("ttl_ms=1: %v", err)
	}
}

func TestParseRejectsARestartWhoseMaxUnavailableIsNotCanonical(t *testing.T) {
	for _, args := range []string{
		`{"max_unavailable":-0}`, `{"max_unavailable":1.0}`, `{"max_unavailable":1e0}`,
		`{"max_unavailable":"1"}`, `{"max_unavailable":null}`, `{"MAX_UNAVAILABLE":-0}`,
		`{"max_unavailable":1,"Max_Unavailable":2.5}`,
	} {
		op := newOp(OpRestart, TargetAll, "nonce-0001", time.UnixMilli(1_700_000_000_000))
		op.Args = []byte(args)
		_, err := Parse(Sign(testKey, "demo", op).Values())
		var fe *FieldError
		if !errors.As(err, &fe) || !strings.EqualFold(fe.Field, "args.max_unavailable") || !errors.Is(err, ErrMalformed) {
			t.Errorf("args %s: got %v, want a FieldError naming args.max_unavailable", args, err)
		}
	}
	for _, args := range []string{`{"max_unavailable":0}`, `{"max_unavailable": 12 }`, `{}`} {
		op := newOp(OpRestart, TargetAll, "nonce-0001", time.UnixMilli(1_700_000_000_000))
		op.Args = []byte(args)
		if _, err := Parse(Sign(testKey, "demo", op).Values()); err != nil {
			t.Errorf("args %s: %v", args, err)
		}
	}
	// Other ops' args are their handlers': a pull may carry any number.
	op := newOp(OpPull, TargetAll, "nonce-0001", time.UnixMilli(1_700_000_000_000))
	op.Args = []byte(`{"max_unavailable":-1.5}`)
	if _, err := Parse(Sign(testKey, "demo", op).Values()); err != nil {
		t.Errorf("pull args: %v", err)
	}
}

// A signed op respelled by a Redis writer: before, "+00<ms>" and "030000"
// verified (they were parsed and re-formatted before the HMAC) and ran.
func TestADaemonRejectsASignedOpWhoseNumbersWereRespelled(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	target := newTarget("svc", "i-1")
	startDaemon(t, rdb, target, WithKey(testKey), WithBlock(50*time.Millisecond))

	now := time.Now()
	at := Sign(testKey, "svc", newOp(OpPull, "*", "nonce-issued1", now)).Values()
	at = respell(at, FieldIssuedAt, "+00"+at[FieldIssuedAt].(string))
	ttl := Sign(testKey, "svc", newOp(OpPull, "*", "nonce-ttl0001", now)).Values()
	ttl = respell(ttl, FieldTTL, "030000")
	xadd(t, rdb, "svc", at)
	xadd(t, rdb, "svc", ttl)
	xadd(t, rdb, "svc", Sign(testKey, "svc", newOp(OpPull, "*", "nonce-intact1", now)).Values())

	rs := waitResults(t, rdb, "svc", 3)
	for i, want := range []string{`"issued_at"="+00`, `"ttl_ms"="030000"`} {
		if rs[i].Status != StatusRejected || !strings.Contains(rs[i].Reason, want) || !strings.Contains(rs[i].Reason, "canonical decimal") {
			t.Errorf("result %d: %s %q, want rejected naming %s", i, rs[i].Status, rs[i].Reason, want)
		}
	}
	if rs[2].Status != StatusDone {
		t.Errorf("the intact op: %s %q, want done", rs[2].Status, rs[2].Reason)
	}
	if calls := target.Calls(); len(calls) != 1 {
		t.Fatalf("executed %v, want only the intact pull", calls)
	}
}
