package controlops

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func TestKeyBitsRatesKeysByTheirAlphabetAndEncoding(t *testing.T) {
	random := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	weak := map[string]string{
		"16 digits":              "1234567890123456",
		"16 lower-case letters":  "correcthorsebatt",
		"a 20-character phrase":  "passwordpassword1234",
		"16 random bytes in hex": hex.EncodeToString(random(16))[:31], // 124 bits
		"a 21-character base64":  base64.RawStdEncoding.EncodeToString(random(15))[:20] + "=",
		"31 hex digits":          strings.Repeat("a1", 15) + "b",
	}
	for what, k := range weak {
		if b := KeyBits([]byte(k)); b >= MinKeyBits {
			t.Errorf("%s (%q): %.1f bits, want fewer than %d", what, k, b, MinKeyBits)
		}
	}
	strong := map[string]string{
		"the README's (24 random bytes, base64)": base64.StdEncoding.EncodeToString(random(24)),
		"16 random bytes, base64 (22 + '==')":    base64.StdEncoding.EncodeToString(random(16)),
		"32 hex digits":                          hex.EncodeToString(random(16)),
		"a 24-character mixed key":               "Tr0ub4dor&3-Tr0ub4dor&3!",
	}
	for what, k := range strong {
		if b := KeyBits([]byte(k)); b < MinKeyBits {
			t.Errorf("%s (%q): %.1f bits, want at least %d", what, k, b, MinKeyBits)
		}
	}
}

func TestWeakKeysNamesTheVariableAndThePositionNeverTheKey(t *testing.T) {
	strong := []byte(base64.StdEncoding.EncodeToString(make([]byte, 24)))
	weak := []byte("passwordpassword1234")
	if msg := WeakKeys("SG_CONTROL_KEY", [][]byte{strong}); msg != "" {
		t.Errorf("a strong key: %q, want no warning", msg)
	}
	msg := WeakKeys("SG_CONTROL_KEY", [][]byte{strong, weak})
	for _, want := range []string{"SG_CONTROL_KEY", "key 2 of 2", "key id " + KeyID(weak), "fewer than 128 bits", "head -c 24 /dev/urandom | base64"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the warning %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, string(weak)) || strings.Contains(msg, "password") {
		t.Errorf("the warning shows the key: %q", msg)
	}
	if msg := WeakKeys("SG_CONTROL_KEY", [][]byte{weak}); !strings.Contains(msg, "SG_CONTROL_KEY (key id ") || strings.Contains(msg, "of 1") {
		t.Errorf("one key: %q, want it named by the variable and its id alone", msg)
	}
}
