package fleetenv

// ParseFailoverURL exposes the Sentinel form's options to the tests.
var ParseFailoverURL = parseFailoverURL

// FailoverNames counts the failover clients RedisAddr can still name.
func FailoverNames() int {
	n := 0
	failovers.Range(func(any, any) bool { n++; return true })
	return n
}

// PairLoads counts the times t's certificate and key were read and loaded
// as a pair (ParseRedisTLS's load included).
func PairLoads(t *RedisTLS) int {
	t.pair.mu.Lock()
	defer t.pair.mu.Unlock()
	return t.pair.loads
}
