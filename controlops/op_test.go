package controlops

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func validValues() map[string]any {
	op := newOp(OpPull, TargetAll, "nonce-0001", time.UnixMilli(1_700_000_000_000))
	op.Args = []byte(`{"a":1}`)
	op.Traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	return Sign(testKey, "demo", op).Values()
}

func TestParseRoundTripsValues(t *testing.T) {
	v := validValues()
	op, err := Parse(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(testKey, "demo", op); err != nil {
		t.Fatalf("Verify after Parse(Values()): %v", err)
	}
	if string(op.Args) != `{"a":1}` || op.TTL != 30*time.Second || op.Target != "*" {
		t.Fatalf("parsed %+v", op)
	}
}

func TestParseNamesTheBadField(t *testing.T) {
	cases := map[string]func(v map[string]any){
		FieldID:       func(v map[string]any) { delete(v, FieldID) },
		FieldOp:       func(v map[string]any) { v[FieldOp] = "Re Start" },
		FieldTarget:   func(v map[string]any) { v[FieldTarget] = "a b" },
		FieldArgs:     func(v map[string]any) { v[FieldArgs] = "{not json" },
		FieldIssuedAt: func(v map[string]any) { v[FieldIssuedAt] = "yesterday" },
		FieldTTL:      func(v map[string]any) { v[FieldTTL] = "99999999999" },
		FieldNonce:    func(v map[string]any) { v[FieldNonce] = "short" },
		FieldSig:      func(v map[string]any) { v[FieldSig] = "XYZ" },
	}
	for field, mutate := range cases {
		v := validValues()
		mutate(v)
		_, err := Parse(v)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want a FieldError naming %q", field, err, field)
		}
	}
}

func TestParseRejectsAbsurdSizes(t *testing.T) {
	v := validValues()
	v[FieldArgs] = `"` + strings.Repeat("x", MaxArgsLen) + `"`
	if _, err := Parse(v); !errors.Is(err, ErrMalformed) {
		t.Errorf("huge args: %v", err)
	}
	v = validValues()
	for i := 0; i < MaxFields; i++ {
		v[strings.Repeat("f", i+1)] = "x"
	}
	if _, err := Parse(v); !errors.Is(err, ErrMalformed) {
		t.Errorf("too many fields: %v", err)
	}
}

func TestVerifyRefusesTamperingAndOtherServices(t *testing.T) {
	op, err := Parse(validValues())
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(testKey, "other", op); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other service: %v", err)
	}
	tampered := op
	tampered.Target = "victim"
	if err := Verify(testKey, "demo", tampered); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered target: %v", err)
	}
	if err := Verify([]byte("another-key-of-16b"), "demo", op); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other key: %v", err)
	}
	op.Sig = ""
	if err := Verify(testKey, "demo", op); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
}

func TestCanonicalFormIsUnambiguous(t *testing.T) {
	a := Op{ID: "a", Name: "b", Args: []byte("1"), Nonce: "n"}
	b := Op{ID: "a", Name: "b\n1:1", Nonce: "n"}
	if string(a.Canonical("s")) == string(b.Canonical("s")) {
		t.Fatal("two different ops share a canonical form")
	}
}

func TestFreshAllowsSkewAndRefusesOutsideTheWindow(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	op := newOp(OpPull, "*", "nonce-0001", now)
	for _, c := range []struct {
		at time.Time
		ok bool
	}{
		{now, true},
		{now.Add(-4 * time.Second), true},  // sender's clock ahead, within skew
		{now.Add(-6 * time.Second), false}, // too far in the future
		{now.Add(34 * time.Second), true},  // ttl 30s + skew 5s
		{now.Add(36 * time.Second), false},
	} {
		err := op.Fresh(c.at, 5*time.Second)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrExpired)) {
			t.Errorf("at %v: %v, want ok=%v", c.at.Sub(now), err, c.ok)
		}
	}
}

// FuzzParseVerify: no input makes Parse, VerifyAny or Fresh panic; whatever
// Parse accepts survives Values/Parse unchanged and verifies once signed; and
// nothing verifies under the key list (new, old) that a holder of one of those
// keys did not sign: the seeds signed with them are the only entries that
// verify, and one signed with a third key never does.
func FuzzParseVerify(f *testing.F) {
	keys := [][]byte{newKey, oldKey}
	signed := map[string]string{} // canonical form -> sig, for what the listed keys signed
	for i, k := range [][]byte{newKey, oldKey, thirdKey} {
		op := newOp([]string{OpPull, OpRestart, "flush"}[i], []string{TargetAll, "i-1", "i-2"}[i], fmt.Sprintf("nonce-%04d", i), time.UnixMilli(1_700_000_000_000))
		op.Args = []byte(`{"max_unavailable":1}`)
		op.Traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		op = Sign(k, "demo", op)
		if i < 2 {
			signed[string(op.Canonical("demo"))] = op.Sig
		}
		v := op.Values()
		f.Add(v[FieldID].(string), v[FieldOp].(string), v[FieldTarget].(string), v[FieldArgs].(string),
			v[FieldIssuedAt].(string), v[FieldTTL].(string), v[FieldNonce].(string), v[FieldTraceparent].(string), v[FieldSig].(string))
	}
	f.Add("", "", "", "", "", "", "", "", "")
	f.Add("x", "restart", "i-1", `{"max_unavailable":1}`, "-1", "0", "nonce\n\x00", "", "00")
	f.Add("x", "pull", "*", `[`, "99999999999999999999", "300000", strings.Repeat("n", 200), "tp", strings.Repeat("a", 64))
	f.Fuzz(func(t *testing.T, id, op, target, args, issued, ttl, nonce, tp, sig string) {
		vals := map[string]any{FieldID: id, FieldOp: op, FieldTarget: target, FieldArgs: args,
			FieldIssuedAt: issued, FieldTTL: ttl, FieldNonce: nonce, FieldTraceparent: tp, FieldSig: sig}
		o, err := Parse(vals)
		keyID, verr := VerifyAny(keys, "demo", o)
		_ = o.Fresh(time.UnixMilli(1_700_000_000_000), 5*time.Second)
		_ = o.Stale(time.UnixMilli(1_700_000_000_000), 5*time.Second)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v does not match ErrMalformed", err)
			}
			return
		}
		if verr == nil {
			canonical := string(o.Canonical("demo"))
			if want, ok := signed[canonical]; !ok || want != o.Sig {
				t.Fatalf("forgery: an entry no listed key signed verifies (key %s): %q", keyID, canonical)
			}
			if keyID != KeyID(newKey) && keyID != KeyID(oldKey) {
				t.Fatalf("verified by key id %q, not one of the list", keyID)
			}
			tampered := o
			tampered.Nonce += "x"
			if _, err := VerifyAny(keys, "demo", tampered); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("a changed nonce still verifies: %v", err)
			}
		} else if !errors.Is(verr, ErrBadSignature) && !errors.Is(verr, ErrUnsigned) {
			t.Fatalf("VerifyAny error %v is neither ErrBadSignature nor ErrUnsigned", verr)
		}
		if _, err := VerifyAny(keys, "demo", Sign(thirdKey, "demo", o)); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("signed with a key not in the list: %v, want ErrBadSignature", err)
		}
		again, err := Parse(o.Values())
		if err != nil {
			t.Fatalf("re-parse of an accepted entry: %v", err)
		}
		if string(again.Canonical("demo")) != string(o.Canonical("demo")) {
			t.Fatal("canonical form changed through Values/Parse")
		}
		for _, k := range keys {
			if id, err := VerifyAny(keys, "demo", Sign(k, "demo", o)); err != nil || id != KeyID(k) {
				t.Fatalf("signed with a listed key: %q, %v, want verified by %s", id, err, KeyID(k))
			}
		}
	})
}
