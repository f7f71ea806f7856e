package controlops

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/stargazer/lifecycle/fleetenv"
)

// Entry field names on sg:control:{<name>}. They are a contract between every
// instance and every client of the fleet: never rename one.
const (
	FieldID          = "id"
	FieldOp          = "op"
	FieldTarget      = "target"
	FieldArgs        = "args"
	FieldIssuedAt    = "issued_at"
	FieldTTL         = "ttl_ms"
	FieldNonce       = "nonce"
	FieldTraceparent = "traceparent"
	FieldSig         = "sig"
	// FieldKeyID names the key that signed the entry, by its KeyID. It is a
	// hint for the reason of a rejection, not signed: whoever can write the
	// stream can change it, and the signature is what is checked.
	FieldKeyID = "key_id"
)

// Well-known operations.
const (
	// OpRestart: running -> shutdown -> a fresh process with the same instance id.
	OpRestart = "restart"
	// OpPull: running -> pulling -> running, calling the service's pull handler.
	OpPull = "pull"
	// OpDrain: running -> draining: out of rotation (readiness 503), still
	// running, until an undrain op, a restart op or a stop.
	OpDrain = "drain"
	// OpUndrain: draining -> running, back in rotation.
	OpUndrain = "undrain"
)

// TargetAll addresses every instance of the service.
const TargetAll = "*"

// Limits on an entry. An entry beyond them is malformed: rejected, never
// executed. A Daemon never loads an entry of more than MaxEntryLen bytes or
// MaxFields fields (see the package documentation).
const (
	MaxEntryLen  = 80 << 10                // bytes of one stream entry: its field names and values summed
	MaxFields    = 32                      // fields in one stream entry, known or not
	MaxIDLen     = 64                      // id
	MaxOpLen     = fleetenv.MaxOpLen       // op
	MaxTargetLen = fleetenv.MaxInstanceLen // target (an instance id)
	MaxArgsLen   = 64 << 10                // args, bytes of JSON
	MaxNonceLen  = 128                     // nonce
	MinNonceLen  = 8                       // nonce
	MaxTraceLen  = 512                     // traceparent
	MaxTTL       = 5 * time.Minute         // ttl_ms: how long a captured op stays usable
)

// SignatureVersion opens the canonical form that is signed; a change of the form
// changes it.
const SignatureVersion = "sg-control-v1"

// Sentinel errors, for errors.Is. The daemon reports each as a rejected result
// whose reason is the error text.
var (
	// ErrMalformed: a field is missing, too large or badly formed.
	ErrMalformed = errors.New("controlops: malformed entry")
	// ErrOversized: the entry holds more than MaxEntryLen bytes or MaxFields
	// fields; the daemon rejected it without loading it. It matches
	// ErrMalformed.
	ErrOversized = fmt.Errorf("%w: oversized", ErrMalformed)
	// ErrDisabled: the instance has neither a key nor the insecure opt-in, so
	// it executes no op. The text says how to enable ops.
	ErrDisabled = errors.New("controlops: control ops are disabled on this instance: " +
		"set SG_CONTROL_KEY to accept signed ops, or SG_CONTROL_INSECURE=true to accept unsigned ones")
	// ErrUnsigned: a key is configured and the entry has no sig.
	ErrUnsigned = errors.New("controlops: unsigned entry")
	// ErrBadSignature: sig does not match the entry under the key.
	ErrBadSignature = errors.New("controlops: bad signature")
	// ErrExpired: now is outside [issued_at - skew, issued_at + ttl_ms + skew].
	ErrExpired = errors.New("controlops: entry expired")
	// ErrStale: the op was issued before the daemon's not-before time (its
	// process's start, or what a restart handed over) by more than the skew.
	ErrStale = errors.New("controlops: op issued before this process started (stale)")
	// ErrReplayed: the entry's nonce was already used on this instance.
	ErrReplayed = errors.New("controlops: nonce already used (replay)")
	// ErrReplayMemoryFull: the daemon remembers as many nonces as it may
	// (WithReplayMemory) and none has expired yet: the op is refused rather
	// than executed without replay protection.
	ErrReplayMemoryFull = errors.New("controlops: replay memory full")
	// ErrUnknownOp: the target has no handler for the op.
	ErrUnknownOp = errors.New("controlops: unknown operation")
	// ErrInvalidState: the op is not valid in the target's current state.
	ErrInvalidState = errors.New("controlops: operation not valid in the current state")
)

// FieldError names the field of an entry that is missing or bad. It matches
// ErrMalformed.
type FieldError struct {
	Field string
	// Value is the bad value, cut to 64 bytes ("" when the field is missing).
	Value string
	Err   error
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("controlops: field %q: %v", e.Field, e.Err)
	}
	return fmt.Sprintf("controlops: field %q=%q: %v", e.Field, e.Value, e.Err)
}

// Unwrap returns the cause.
func (e *FieldError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrMalformed) true.
func (e *FieldError) Is(target error) bool { return target == ErrMalformed }

func fieldErr(field, value string, format string, args ...any) error {
	if len(value) > 64 {
		value = value[:64] + "..."
	}
	return &FieldError{Field: field, Value: value, Err: fmt.Errorf(format, args...)}
}

// Op is one control-channel entry.
type Op struct {
	// ID identifies the op; results carry it as op_id. Field "id".
	ID string
	// Name is the operation, e.g. "restart". Field "op".
	Name string
	// Target is "*" or an instance id. Field "target".
	Target string
	// Args is the op's JSON arguments, possibly empty. Field "args".
	Args json.RawMessage
	// IssuedAt is when the sender signed the op, to the millisecond. Field
	// "issued_at" (unix milliseconds).
	IssuedAt time.Time
	// TTL is how long after IssuedAt the op may still be executed. Field
	// "ttl_ms".
	TTL time.Duration
	// Nonce is a random string each instance accepts once. Field "nonce".
	Nonce string
	// Traceparent is the sender's W3C trace context, possibly empty. Field
	// "traceparent".
	Traceparent string
	// Sig is hex HMAC-SHA256 of the canonical form (see Sign), or "" when
	// unsigned. Field "sig".
	Sig string
	// KeyID is the KeyID of the key that signed it (set by Sign), so that an
	// instance that rejects the signature can say which key it was signed
	// with; not signed. Field "key_id".
	KeyID string

	// StreamID is the entry's Redis stream ID: set by Client.Send and by the
	// daemon, never signed nor stored in the entry.
	StreamID string
}

var (
	idRE    = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	nonceRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	sigRE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	keyIDRE = regexp.MustCompile(`^[0-9a-f]{8}$`)
)

// Parse reads an entry's fields (as go-redis returns them in XMessage.Values)
// into an Op. It checks presence, sizes and formats, not the signature nor the
// time window (see Verify and Op.Fresh). Unknown fields are ignored, up to
// MaxFields in all. Errors are *FieldError naming the field and match
// ErrMalformed. Parse never panics.
func Parse(values map[string]any) (Op, error) {
	var op Op
	if len(values) > MaxFields {
		return op, fieldErr("*", "", "%d fields: want at most %d", len(values), MaxFields)
	}
	get := func(name string, required bool) (string, error) {
		v, ok := values[name]
		if !ok {
			if required {
				return "", fieldErr(name, "", "missing")
			}
			return "", nil
		}
		switch s := v.(type) {
		case string:
			return s, nil
		case []byte:
			return string(s), nil
		default:
			return "", fieldErr(name, "", "want a string, got %T", v)
		}
	}
	var err error
	if op.ID, err = get(FieldID, true); err != nil {
		return op, err
	}
	if len(op.ID) == 0 || len(op.ID) > MaxIDLen || !idRE.MatchString(op.ID) {
		return op, fieldErr(FieldID, op.ID, "want 1-%d characters of A-Z, a-z, 0-9, '.', '_' or '-'", MaxIDLen)
	}
	if op.Name, err = get(FieldOp, true); err != nil {
		return op, err
	}
	if err := fleetenv.ValidateOp(op.Name); err != nil {
		return op, fieldErr(FieldOp, op.Name, "%v", err)
	}
	if op.Target, err = get(FieldTarget, true); err != nil {
		return op, err
	}
	if op.Target != TargetAll && fleetenv.ValidateInstance(op.Target) != nil {
		return op, fieldErr(FieldTarget, op.Target, "want %q or an instance id", TargetAll)
	}
	args, err := get(FieldArgs, false)
	if err != nil {
		return op, err
	}
	if len(args) > MaxArgsLen {
		return op, fieldErr(FieldArgs, "", "%d bytes: want at most %d", len(args), MaxArgsLen)
	}
	if args != "" {
		if !json.Valid([]byte(args)) {
			return op, fieldErr(FieldArgs, args, "not valid JSON")
		}
		op.Args = json.RawMessage(args)
	}
	if err := checkArgs(op.Name, op.Args); err != nil {
		return op, err
	}
	s, err := get(FieldIssuedAt, true)
	if err != nil {
		return op, err
	}
	ms, perr := parseCanonical(s)
	// Up to year 5138: enough, and far from int64 overflow in time arithmetic.
	if perr != nil || ms <= 0 || ms > 1e14 {
		return op, fieldErr(FieldIssuedAt, s, "want unix milliseconds in canonical decimal")
	}
	op.IssuedAt = time.UnixMilli(ms)
	if s, err = get(FieldTTL, true); err != nil {
		return op, err
	}
	ttl, perr := parseCanonical(s)
	if perr != nil || ttl <= 0 || ttl > MaxTTL.Milliseconds() {
		return op, fieldErr(FieldTTL, s, "want milliseconds in 1-%d in canonical decimal", MaxTTL.Milliseconds())
	}
	op.TTL = time.Duration(ttl) * time.Millisecond
	if op.Nonce, err = get(FieldNonce, true); err != nil {
		return op, err
	}
	if len(op.Nonce) < MinNonceLen || len(op.Nonce) > MaxNonceLen || !nonceRE.MatchString(op.Nonce) {
		return op, fieldErr(FieldNonce, op.Nonce, "want %d-%d characters of A-Z, a-z, 0-9, '_' or '-'", MinNonceLen, MaxNonceLen)
	}
	if op.Traceparent, err = get(FieldTraceparent, false); err != nil {
		return op, err
	}
	if len(op.Traceparent) > MaxTraceLen {
		return op, fieldErr(FieldTraceparent, op.Traceparent, "want at most %d bytes", MaxTraceLen)
	}
	if op.Sig, err = get(FieldSig, false); err != nil {
		return op, err
	}
	if op.Sig != "" && !sigRE.MatchString(op.Sig) {
		return op, fieldErr(FieldSig, op.Sig, "want 64 lower-case hex digits (HMAC-SHA256)")
	}
	if op.KeyID, err = get(FieldKeyID, false); err != nil {
		return op, err
	}
	if op.KeyID != "" && !keyIDRE.MatchString(op.KeyID) {
		return op, fieldErr(FieldKeyID, op.KeyID, "want 8 lower-case hex digits (a KeyID)")
	}
	// The known fields are bounded one by one; the others only by this.
	size, largest, largestLen := 0, "", 0
	for k, v := range values {
		n := len(k)
		switch s := v.(type) {
		case string:
			n += len(s)
		case []byte:
			n += len(s)
		}
		size += n
		if n > largestLen {
			largest, largestLen = k, n
		}
	}
	if size > MaxEntryLen {
		return op, fieldErr(largest, "", "the entry is %d bytes (this field %d): want at most %d", size, largestLen, MaxEntryLen)
	}
	return op, nil
}

// Values returns the entry's fields for XADD, sig included when set.
func (o Op) Values() map[string]any {
	v := map[string]any{
		FieldID:          o.ID,
		FieldOp:          o.Name,
		FieldTarget:      o.Target,
		FieldArgs:        string(o.Args),
		FieldIssuedAt:    strconv.FormatInt(o.IssuedAt.UnixMilli(), 10),
		FieldTTL:         strconv.FormatInt(o.TTL.Milliseconds(), 10),
		FieldNonce:       o.Nonce,
		FieldTraceparent: o.Traceparent,
	}
	if o.Sig != "" {
		v[FieldSig] = o.Sig
	}
	if o.KeyID != "" {
		v[FieldKeyID] = o.KeyID
	}
	return v
}

// Canonical returns the bytes that are signed for an op sent to service: each of
// SignatureVersion, service, id, op, target, args, issued_at, ttl_ms, nonce and
// traceparent, in this order, written as "<decimal length>:<value>\n" (the
// length prefix makes the form unambiguous whatever the values contain).
// issued_at and ttl_ms are written as in the entry (decimal milliseconds).
//
// The service is signed although it is not a field: an op signed for one
// service's stream cannot be replayed on another's.
func (o Op) Canonical(service string) []byte {
	var b bytes.Buffer
	for _, v := range []string{
		SignatureVersion, service, o.ID, o.Name, o.Target, string(o.Args),
		strconv.FormatInt(o.IssuedAt.UnixMilli(), 10),
		strconv.FormatInt(o.TTL.Milliseconds(), 10),
		o.Nonce, o.Traceparent,
	} {
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Sign returns o with Sig set to hex(HMAC-SHA256(key, o.Canonical(service)))
// and KeyID to the key's KeyID.
func Sign(key []byte, service string, o Op) Op {
	o.Sig = signature(key, service, o)
	o.KeyID = KeyID(key)
	return o
}

func signature(key []byte, service string, o Op) string {
	m := hmac.New(sha256.New, key)
	m.Write(o.Canonical(service))
	return hex.EncodeToString(m.Sum(nil))
}

// Verify checks o's signature under key for service, in constant time. It
// returns nil when it matches, ErrUnsigned when o has no sig and ErrBadSignature
// when it does not match. It does not check the time window (Op.Fresh) nor the
// nonce (the daemon claims it in Redis).
func Verify(key []byte, service string, o Op) error {
	if o.Sig == "" {
		return ErrUnsigned
	}
	want, err := hex.DecodeString(o.Sig)
	if err != nil {
		return fmt.Errorf("%w: sig is not hex", ErrBadSignature)
	}
	m := hmac.New(sha256.New, key)
	m.Write(o.Canonical(service))
	if !hmac.Equal(m.Sum(nil), want) {
		return ErrBadSignature
	}
	return nil
}

// VerifyAny checks o's signature under each of keys (Verify) and returns the
// KeyID of the first key that matches. It returns ErrUnsigned when o has no
// sig, and ErrBadSignature when no key matches or keys is empty.
func VerifyAny(keys [][]byte, service string, o Op) (string, error) {
	if o.Sig == "" {
		return "", ErrUnsigned
	}
	want, err := hex.DecodeString(o.Sig)
	if err != nil {
		return "", fmt.Errorf("%w: sig is not hex", ErrBadSignature)
	}
	canonical := o.Canonical(service)
	for _, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write(canonical)
		if hmac.Equal(m.Sum(nil), want) {
			return KeyID(k), nil
		}
	}
	signer := "a key the entry does not name"
	if o.KeyID != "" {
		signer = "key " + o.KeyID
	}
	return "", fmt.Errorf("%w: signed with %s; this instance accepts key ids %s (set SG_CONTROL_KEY alike on the senders and the instances)",
		ErrBadSignature, signer, strings.Join(KeyIDs(keys), ", "))
}

// Stale reports whether o was issued too long before notBefore (when the
// instance's process started): issued_at earlier than notBefore - skew. It
// returns an error matching ErrStale that says by how much, or nil. An op
// replayed to a freshly started process is stale although still fresh.
func (o Op) Stale(notBefore time.Time, skew time.Duration) error {
	if d := notBefore.Sub(o.IssuedAt); d > skew {
		return fmt.Errorf("%w: issued_at is %s before the process's not-before time %s (allowed skew %s)",
			ErrStale, d.Round(time.Millisecond), notBefore.UTC().Format(time.RFC3339Nano), skew)
	}
	return nil
}

// Fresh reports whether o may be executed at now: now must lie in
// [IssuedAt - skew, IssuedAt + TTL + skew], skew allowing for the sender's and
// the instance's clocks to disagree. Otherwise it returns an error matching
// ErrExpired that says by how much.
func (o Op) Fresh(now time.Time, skew time.Duration) error {
	if d := o.IssuedAt.Sub(now); d > skew {
		return fmt.Errorf("%w: issued_at is %s in the future (allowed skew %s)", ErrExpired, d.Round(time.Millisecond), skew)
	}
	if d := now.Sub(o.IssuedAt.Add(o.TTL)); d > skew {
		return fmt.Errorf("%w: ttl_ms %d ran out %s ago (allowed skew %s)", ErrExpired, o.TTL.Milliseconds(), d.Round(time.Millisecond), skew)
	}
	return nil
}

// Addressed reports whether o is for instance: its target is "*" or the id.
func (o Op) Addressed(instance string) bool {
	return o.Target == TargetAll || o.Target == instance
}
