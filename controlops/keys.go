package controlops

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// MinKeyLen is the shortest key accepted, in bytes.
const MinKeyLen = 16

// ErrKey: a key list (SG_CONTROL_KEY) is not usable. The error says which key
// and why, never what the key is.
var ErrKey = errors.New("controlops: invalid key")

// ParseKeys reads a key list as SG_CONTROL_KEY holds it: one key, or several
// separated by commas (so a key cannot contain a comma). Each key is at least
// MinKeyLen bytes, taken as is (spaces included). The first key signs; every
// key verifies: to rotate, deploy "new,old" everywhere, switch the operators
// to "new", then drop "old" from the services. "" returns no keys and no
// error. Errors match ErrKey and name the key by its position only.
func ParseKeys(s string) ([][]byte, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	keys := make([][]byte, len(parts))
	for i, p := range parts {
		if len(p) < MinKeyLen {
			if len(parts) == 1 {
				return nil, fmt.Errorf("%w: %d bytes: want at least %d", ErrKey, len(p), MinKeyLen)
			}
			return nil, fmt.Errorf("%w: key %d of %d is %d bytes: want at least %d, keys separated by commas", ErrKey, i+1, len(parts), len(p), MinKeyLen)
		}
		keys[i] = []byte(p)
	}
	return keys, nil
}

// KeyID returns a key's public name: the first 8 hex digits of the key's
// SHA-256. Results and logs name keys by it; the key itself is never shown.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

// KeyIDs returns the KeyID of each key, in order.
func KeyIDs(keys [][]byte) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = KeyID(k)
	}
	return ids
}
