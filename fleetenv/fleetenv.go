// Package fleetenv is the fleet's environment contract: how an instance is
// named, which variables configure it and how they are read, and how a
// REDIS_URL becomes a client. Services (through package lifecycle), the
// registry, the control channel and sgctl all apply these rules, so a name or
// a value that one of them accepts, the others accept too.
//
//   - Names: ValidateService, ValidateInstance and ValidateOp, one rule per
//     identifier. A service name is part of Redis keys and of their Redis
//     Cluster hash tag; an instance id and an op name are parts of keys and
//     stream fields.
//   - Variables: the names (RedisURL, ServiceTTL, ...) and the rules that
//     are shared beyond a service's own process: ParseServiceTTL,
//     ValidateAdvertiseAddr.
//   - Redis: NewRedisClient builds a client from a REDIS_URL (one server, a
//     Redis Cluster, or a master behind Sentinels) with the deadline settings
//     every program of the fleet needs, and, with WithTLS, the client
//     certificate and server CA of SG_REDIS_TLS_CERT, SG_REDIS_TLS_KEY and
//     SG_REDIS_TLS_CA (ParseRedisTLS); RedactURL and RedisAddr print a URL
//     or a client's servers without credentials.
//
// The package imports nothing of the module and no OpenTelemetry, so a small
// tool links it without the exporters.
package fleetenv

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"
)

// Environment variables every program of the fleet reads the same way.
// Package lifecycle documents what each one does to a service.
const (
	RedisURL      = "REDIS_URL"
	RedisRequired = "SG_REDIS_REQUIRED"
	RedisTimeout  = "SG_REDIS_TIMEOUT"
	BootJitter    = "SG_BOOT_JITTER"
	BootTimeout   = "SG_BOOT_TIMEOUT"
	ServiceTTL    = "SG_SERVICE_TTL"
	HealthPort    = "SG_HEALTH_PORT"
	HealthHost    = "SG_HEALTH_HOST"
	// HealthShowAddrs=true lets /healthz and /readyz show the network
	// addresses in failing checks' outputs (health.WithAddresses).
	HealthShowAddrs = "SG_HEALTH_SHOW_ADDRS"
	ServiceName     = "SG_SERVICE_NAME"
	InstanceID      = "SG_INSTANCE_ID"
	ControlKey      = "SG_CONTROL_KEY"
	DrainDelay      = "SG_DRAIN_DELAY"
	// AdvertiseAddr is the address clients call an instance at, written in
	// its registry entry (ValidateAdvertiseAddr).
	AdvertiseAddr = "SG_ADVERTISE_ADDR"
	// ControlInsecure=true accepts unsigned control ops when no key is set.
	ControlInsecure = "SG_CONTROL_INSECURE"
	// RedisTLSCert and RedisTLSKey are the PEM files of the client
	// certificate, and its key, presented to a Redis that requires one;
	// RedisTLSCA is the PEM file of the CA certificates that verify the
	// server (unset: the system's roots). See RedisTLS.
	RedisTLSCert = "SG_REDIS_TLS_CERT"
	RedisTLSKey  = "SG_REDIS_TLS_KEY"
	RedisTLSCA   = "SG_REDIS_TLS_CA"
)

// Limits of the identifiers.
const (
	MaxServiceLen  = 63
	MaxInstanceLen = 128
	MaxOpLen       = 64
)

var (
	serviceRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	instanceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	opRE       = serviceRE
)

// ValidateService reports whether name can be a service name: 1-63
// lower-case letters, digits, '.', '_' and '-', starting with a letter or
// digit. Braces, colons and spaces are refused because the name is part of
// Redis keys and of their Redis Cluster hash tag.
func ValidateService(name string) error {
	if len(name) > MaxServiceLen || !serviceRE.MatchString(name) {
		return errors.New("want 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// ValidateInstance reports whether id can be an instance id: 1-128 letters,
// digits, '.', '_' and '-', starting with a letter or digit.
func ValidateInstance(id string) error {
	if len(id) > MaxInstanceLen || !instanceRE.MatchString(id) {
		return errors.New("want 1-128 characters of A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// ValidateOp reports whether name can be a control op's name: 1-64
// lower-case letters, digits, '.', '_' and '-', starting with a letter or
// digit.
func ValidateOp(name string) error {
	if len(name) > MaxOpLen || !opRE.MatchString(name) {
		return errors.New("want 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// DefaultServiceTTL is the registry entry's TTL when SG_SERVICE_TTL is unset.
const DefaultServiceTTL = 30 * time.Second

// MinServiceTTL is the smallest registry TTL: below it the heartbeat (every
// max(1s, TTL/3)) could not keep an entry alive.
const MinServiceTTL = 3 * time.Second

// ValidateServiceTTL reports whether ttl can be a registry TTL: at least
// MinServiceTTL.
func ValidateServiceTTL(ttl time.Duration) error {
	if ttl < MinServiceTTL {
		return fmt.Errorf("want a duration >= %s such as 30s", MinServiceTTL)
	}
	return nil
}

// ParseServiceTTL reads an SG_SERVICE_TTL value: a Go duration of at least
// MinServiceTTL.
func ParseServiceTTL(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("want a duration >= %s such as 30s", MinServiceTTL)
	}
	return d, ValidateServiceTTL(d)
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// ValidateAdvertiseAddr reports whether addr can be advertised in a registry
// entry for clients to call: "host:port", the host a name or an IP address
// (IPv6 in brackets), the port 1-65535. An empty or unspecified host
// (0.0.0.0, ::) and port 0 are refused: they name where a server listens,
// not where a client can reach it.
func ValidateAdvertiseAddr(addr string) error {
	const want = "want host:port that clients can call, such as 10.0.0.7:8080 or api-1.internal:8080"
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New(want)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want 1-65535; %s", port, want)
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() {
			return fmt.Errorf("host %s is unspecified (it means all interfaces); %s", host, want)
		}
		return nil
	}
	if len(host) > 253 || !hostRE.MatchString(host) {
		return fmt.Errorf("host %q: not a host name or IP address; %s", host, want)
	}
	return nil
}
