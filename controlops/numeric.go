package controlops

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// errNotCanonical: a numeric field is not written as canonical decimal.
var errNotCanonical = errors.New("not canonical decimal")

// parseCanonical parses s as a non-negative integer written in canonical
// decimal: ASCII digits only, no sign, no space, no leading zero except "0"
// itself. Every numeric field of an op is read this way because issued_at and
// ttl_ms are signed as they are re-formatted, not as they are written: a
// looser parse would let a Redis writer rewrite "1700000000000" as
// "+01700000000000" under the same signature, and the entry, as stored and
// as other readers see it, would no longer be what was signed.
func parseCanonical(s string) (int64, error) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, errNotCanonical
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errNotCanonical
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// numericArgs lists, per op, the arguments that are numbers: each must be a
// JSON number written in canonical decimal (RestartArgs.MaxUnavailable).
var numericArgs = map[string][]string{
	OpRestart: {"max_unavailable"},
}

// checkArgs rejects an op whose numeric arguments (numericArgs) are not
// canonical decimal. The args are signed as they are written, so this is not
// about forgery: it keeps one spelling per value for everyone who reads an
// op, the handlers included ("-0", "1.0", "1e0" and "01" all mean a number
// that no sender writes). Other ops' args belong to their handlers.
func checkArgs(name string, args json.RawMessage) error {
	fields := numericArgs[name]
	if len(fields) == 0 || len(args) == 0 {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(args, &m); err != nil {
		return fieldErr(FieldArgs, string(args), "want a JSON object: %v", err)
	}
	// encoding/json matches a struct's fields case-insensitively, so every
	// spelling of a name is one the handler would read.
	for k, v := range m {
		for _, f := range fields {
			if !strings.EqualFold(k, f) {
				continue
			}
			// The raw value is as written, spaces around it cut (a space
			// inside would have made the JSON invalid).
			if _, err := parseCanonical(string(bytes.TrimSpace(v))); err != nil {
				return fieldErr(FieldArgs+"."+k, string(v), "want a non-negative integer in canonical decimal")
			}
		}
	}
	return nil
}
