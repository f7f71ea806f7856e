package registry_test

import "flag"

// testingFlag returns the value of a flag registered by package testing, or "".
func testingFlag(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}
