// Package textcut cuts text to a size in bytes at a character boundary, as
// the writers of the registry and of control-op results do to keep their
// fields within the limits their readers enforce.
package textcut

import "unicode/utf8"

// Ellipsis ends a value that was cut.
const Ellipsis = "…"

// Bytes returns s when it is at most n bytes long, and otherwise its
// longest prefix that ends at a character boundary and, followed by
// Ellipsis, is at most n bytes.
func Bytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := max(n-len(Ellipsis), 0)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + Ellipsis
}
