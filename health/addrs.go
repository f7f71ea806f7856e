package health

import "regexp"

// AddrHidden replaces each network address in a check's output unless
// WithAddresses(true) was given.
const AddrHidden = "(address hidden)"

// addrPatterns match what a network address looks like in the errors of
// net, crypto/tls and go-redis: an IPv4 or a bracketed IPv6 address, with
// or without a port, a host name with a port, the name a lookup failed for,
// and the names of a certificate that did not match.
var addrPatterns = []*regexp.Regexp{
	regexp.MustCompile(`\[[0-9A-Fa-f:.]+(%[^\]]*)?\](:\d+)?`),
	regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`),
	regexp.MustCompile(`\b[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*:\d{1,5}\b`),
	regexp.MustCompile(`\b[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}\b`),
}

var (
	lookupRE = regexp.MustCompile(`\blookup [^\s:]+`)
	certRE   = regexp.MustCompile(`(certificate is valid for ).*?(, not )\S+`)
)

// hideAddrs returns s with every network address replaced by AddrHidden.
// A check's output is an error's text: go-redis's say where Redis is
// ("dial tcp 10.0.0.5:6379: connect: connection refused"), which /healthz,
// often reachable by more than the operators, need not tell.
func hideAddrs(s string) string {
	s = lookupRE.ReplaceAllString(s, "lookup "+AddrHidden)
	s = certRE.ReplaceAllString(s, "${1}"+AddrHidden+"${2}"+AddrHidden)
	for _, re := range addrPatterns {
		s = re.ReplaceAllString(s, AddrHidden)
	}
	return s
}
