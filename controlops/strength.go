package controlops

import (
	"fmt"
	"math"
	"strings"
)

// MinKeyBits is the strength below which a key is reported as weak (see
// KeyBits): an HMAC key guessed offline, from any signed op read in Redis,
// signs ops as the operator does.
const MinKeyBits = 128

// KeyBits estimates the entropy of a key, in bits, from its text: an upper
// bound, so a key below MinKeyBits is certainly weak and one above is not
// certainly strong (a repeated or dictionary key is overrated).
//
// A key is taken as its bytes, whatever they spell; the estimate is the
// smallest of:
//   - the length times log2 of the alphabet its characters are drawn from,
//     by classes: digits (10), lower-case (26), upper-case (26) letters,
//     other printable ASCII (33), and any other byte (161);
//   - for text in the alphabet of hex (0-9, a-f, A-F), 4 bits a character;
//   - for text in the alphabet of base64 (standard or URL-safe, '='
//     padding at the end), 6 bits a character, the padding left out:
//     what the key holds when it was made as the README says
//     (head -c 24 /dev/urandom | base64: 192 bits).
func KeyBits(key []byte) float64 {
	var digit, lower, upper, punct, other bool
	hex, b64 := true, true
	n := len(key)
	for len(key) > 0 && key[len(key)-1] == '=' {
		key = key[:len(key)-1]
		hex = false
	}
	for _, c := range key {
		switch {
		case c >= '0' && c <= '9':
			digit = true
		case c >= 'a' && c <= 'z':
			lower = true
			hex = hex && c <= 'f'
		case c >= 'A' && c <= 'Z':
			upper = true
			hex = hex && c <= 'F'
		case c >= 0x20 && c < 0x7f:
			punct = true
			hex = false
			b64 = b64 && (c == '+' || c == '/' || c == '-' || c == '_')
		default:
			other = true
			hex, b64 = false, false
		}
	}
	alphabet := 0
	for _, class := range []struct {
		seen bool
		size int
	}{{digit, 10}, {lower, 26}, {upper, 26}, {punct, 33}, {other, 161}} {
		if class.seen {
			alphabet += class.size
		}
	}
	if alphabet == 0 {
		return 0
	}
	bits := float64(n) * math.Log2(float64(alphabet))
	if b64 {
		bits = min(bits, 6*float64(len(key)))
	}
	if hex {
		bits = min(bits, 4*float64(len(key)))
	}
	return bits
}

// WeakKeys returns a warning naming each key of keys (the list that source,
// a variable or an option, holds) whose KeyBits is below MinKeyBits, by its
// position and its KeyID, never its text; "" when there is none.
func WeakKeys(source string, keys [][]byte) string {
	var weak []string
	for i, k := range keys {
		b := KeyBits(k)
		if b >= MinKeyBits {
			continue
		}
		if len(keys) == 1 {
			weak = append(weak, fmt.Sprintf("%s (key id %s) has at most %.0f bits of entropy", source, KeyID(k), b))
		} else {
			weak = append(weak, fmt.Sprintf("%s: key %d of %d (key id %s) has at most %.0f bits of entropy", source, i+1, len(keys), KeyID(k), b))
		}
	}
	if len(weak) == 0 {
		return ""
	}
	return strings.Join(weak, "; ") + fmt.Sprintf(", fewer than %d bits: whoever reads one signed op in Redis can guess it offline, and sign ops; "+
		"make one with: head -c 24 /dev/urandom | base64", MinKeyBits)
}
