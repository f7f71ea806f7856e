package fleetenv

// ParseFailoverURL exposes the Sentinel form's options to the tests.
var ParseFailoverURL = parseFailoverURL

// FailoverNames counts the failover clients RedisAddr can still name.
func FailoverNames() int {
	n := 0
	failovers.Range(func(any, any) bool { n++; return true })
	return n
}
