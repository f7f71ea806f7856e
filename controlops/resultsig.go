package controlops

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
)

// ResultSignatureVersion opens the canonical form of a result that is
// signed. It differs from SignatureVersion, so a result's signature can never
// pass for an op's.
const ResultSignatureVersion = "sg-control-result-v1"

// resultFields are the fields of a result entry that its signature covers,
// in the order of the canonical form: all of them but sig.
var resultFields = resultFieldNames[:]

var resultFieldNames = [...]string{
	ResultOpID, ResultOp, ResultStreamID, ResultInstance, ResultStatus, ResultReason,
	ResultAt, ResultState, ResultPID, ResultTraceID, ResultKeyID,
}

// resultCanonical is the canonical form of a result whose i-th field of
// resultFields field(i) returns as it is written in the entry:
// ResultSignatureVersion, service, then resultFields, each as
// "<decimal length>:<value>\n", as Op.Canonical.
func resultCanonical(service string, field func(int) string) []byte {
	var b bytes.Buffer
	put := func(v string) {
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	put(ResultSignatureVersion)
	put(service)
	for i := range resultFields {
		put(field(i))
	}
	return b.Bytes()
}

// Canonical returns the bytes that are signed for a result written to
// service's results stream: ResultSignatureVersion, the service and every
// field but sig (op_id, op, entry, instance, status, reason, at, state, pid,
// trace_id, key_id) as the entry holds them, in this order, each written as
// "<decimal length>:<value>\n".
func (r Result) Canonical(service string) []byte {
	v := r.values()
	return resultCanonical(service, func(i int) string { s, _ := v[resultFields[i]].(string); return s })
}

// SignResult returns r with KeyID set to key's KeyID and Sig to
// hex(HMAC-SHA256(key, r.Canonical(service))). A Daemon signs each result
// of an op that a key verified, with that key, so that the op's sender can
// tell its results from those someone else wrote to Redis.
func SignResult(key []byte, service string, r Result) Result {
	r.KeyID = KeyID(key)
	m := hmac.New(sha256.New, key)
	m.Write(r.Canonical(service))
	r.Sig = hex.EncodeToString(m.Sum(nil))
	return r
}

// VerifyResult checks r's signature for service under each of keys, in
// constant time. It returns nil when one key matches, ErrUnsigned when r
// has no sig, and ErrBadSignature otherwise. A result read from Redis is
// checked as its entry held it, so a field that parses alike but is
// written otherwise ("+07" for a pid of 7) does not verify.
func VerifyResult(keys [][]byte, service string, r Result) error {
	if r.Sig == "" {
		return ErrUnsigned
	}
	want, err := hex.DecodeString(r.Sig)
	if err != nil {
		return fmt.Errorf("%w: result sig is not hex", ErrBadSignature)
	}
	var canonical []byte
	if r.raw != nil {
		canonical = resultCanonical(service, func(i int) string { return r.raw[i] })
	} else {
		canonical = r.Canonical(service)
	}
	for _, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write(canonical)
		if hmac.Equal(m.Sum(nil), want) {
			return nil
		}
	}
	return fmt.Errorf("%w: the result is not signed with a key of this sender (key ids %v)", ErrBadSignature, KeyIDs(keys))
}

// signResult signs res with the key that verified its op (res.KeyID), when
// the daemon holds it; a result of an op no key verified stays unsigned.
func (d *Daemon) signResult(res Result) Result {
	if res.KeyID == "" {
		return res
	}
	for _, k := range d.cfg.keys {
		if KeyID(k) == res.KeyID {
			return SignResult(k, d.svc, res)
		}
	}
	return res
}
