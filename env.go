package lifecycle

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
)

// ErrConfig is matched by errors.Is for every configuration error: Main exits 2 on
// it, before anything touches Redis.
var ErrConfig = errors.New("invalid configuration")

// ConfigError names an input with a bad value: an environment variable or an
// option.
type ConfigError struct {
	// Name is the variable or option, e.g. "SG_BOOT_JITTER".
	Name  string
	Value string
	Err   error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid configuration: %s=%q: %v", e.Name, e.Value, e.Err)
}

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// Env is the configuration Main reads from the environment. Zero fields with their
// Set flag false were not in the environment.
type Env struct {
	RedisURL         string
	Redis            redis.UniversalClient // built from RedisURL, nil when unset
	RedisRequired    bool
	RedisRequiredSet bool
	RedisTimeout     time.Duration
	RedisTimeoutSet  bool
	BootJitter       time.Duration
	BootJitterSet    bool
	BootTimeout      time.Duration
	BootTimeoutSet   bool
	ServiceTTL       time.Duration
	ServiceTTLSet    bool
	HealthPort       int
	HealthPortSet    bool
	HealthHost       string
	HealthHostSet    bool
	ServiceName      string
	InstanceID       string
	// ControlKeys are SG_CONTROL_KEY's keys (controlops.ParseKeys): the first
	// signs, all verify.
	ControlKeys        [][]byte
	ControlInsecure    bool
	ControlInsecureSet bool
	DrainDelay         time.Duration
	DrainDelaySet      bool
	// AdvertiseAddr is SG_ADVERTISE_ADDR, validated; "" when unset.
	AdvertiseAddr string
}

// Environment variables Main reads (their names and shared rules are package
// fleetenv's). SG_HEALTH_HOST is this library's addition: the interface the
// health server binds (default: all).
const (
	EnvRedisURL      = fleetenv.RedisURL
	EnvRedisRequired = fleetenv.RedisRequired
	EnvRedisTimeout  = fleetenv.RedisTimeout
	EnvBootJitter    = fleetenv.BootJitter
	EnvBootTimeout   = fleetenv.BootTimeout
	EnvServiceTTL    = fleetenv.ServiceTTL
	EnvHealthPort    = fleetenv.HealthPort
	EnvHealthHost    = fleetenv.HealthHost
	EnvServiceName   = fleetenv.ServiceName
	EnvInstanceID    = fleetenv.InstanceID
	EnvControlKey    = fleetenv.ControlKey
	// EnvControlInsecure=true accepts unsigned control ops when no key is set.
	EnvControlInsecure = fleetenv.ControlInsecure
	// EnvDrainDelay is how long a stop keeps the instance running out of
	// rotation before the shutdown steps (WithDrainDelay).
	EnvDrainDelay = fleetenv.DrainDelay
	// EnvAdvertiseAddr is the address clients call the instance at, written
	// in its registry entry (WithAdvertiseAddr).
	EnvAdvertiseAddr = fleetenv.AdvertiseAddr
)

// ParseEnv reads and validates the environment through getenv. The first bad
// value is returned as a *ConfigError naming the variable and the value. It builds
// the Redis client from REDIS_URL (fleetenv.NewRedisClient: one server, a
// Redis Cluster with addr=, or a master behind Sentinels with master_name=) but
// does not connect.
func ParseEnv(getenv func(string) string) (Env, error) {
	var env Env
	var err error
	if v := getenv(EnvRedisURL); v != "" {
		env.RedisURL = v
		if env.Redis, err = fleetenv.NewRedisClient(v); err != nil {
			return Env{}, &ConfigError{Name: EnvRedisURL, Value: fleetenv.RedactURL(v), Err: err}
		}
	}
	if v := getenv(EnvRedisRequired); v != "" {
		if env.RedisRequired, err = strconv.ParseBool(v); err != nil {
			return Env{}, env.close(&ConfigError{Name: EnvRedisRequired, Value: v, Err: errors.New("want true or false")})
		}
		env.RedisRequiredSet = true
	}
	if v := getenv(EnvRedisTimeout); v != "" {
		if env.RedisTimeout, err = parseDuration(v); err != nil || env.RedisTimeout <= 0 {
			return Env{}, env.close(&ConfigError{Name: EnvRedisTimeout, Value: v, Err: errors.New("want a duration > 0 such as 2s or 500ms")})
		}
		env.RedisTimeoutSet = true
	}
	if v := getenv(EnvBootTimeout); v != "" {
		if env.BootTimeout, err = parseDuration(v); err != nil || env.BootTimeout < 0 {
			return Env{}, env.close(&ConfigError{Name: EnvBootTimeout, Value: v, Err: errors.New("want a duration >= 0 such as 5m (0 disables it)")})
		}
		env.BootTimeoutSet = true
	}
	if v := getenv(EnvBootJitter); v != "" {
		if env.BootJitter, err = parseDuration(v); err != nil || env.BootJitter < 0 {
			return Env{}, env.close(&ConfigError{Name: EnvBootJitter, Value: v, Err: errors.New("want a duration >= 0 such as 2s or 0")})
		}
		env.BootJitterSet = true
	}
	if v := getenv(EnvServiceTTL); v != "" {
		if env.ServiceTTL, err = fleetenv.ParseServiceTTL(v); err != nil {
			return Env{}, env.close(&ConfigError{Name: EnvServiceTTL, Value: v, Err: err})
		}
		env.ServiceTTLSet = true
	}
	if v := getenv(EnvHealthPort); v != "" {
		if env.HealthPort, err = strconv.Atoi(v); err != nil || env.HealthPort < 0 || env.HealthPort > 65535 {
			return Env{}, env.close(&ConfigError{Name: EnvHealthPort, Value: v, Err: errors.New("want a port number 0-65535 (0 picks a free one)")})
		}
		env.HealthPortSet = true
	}
	if v := getenv(EnvHealthHost); v != "" {
		// A bare IPv6 address is accepted too: the Kubernetes downward API
		// gives one (status.podIP) in an IPv6 cluster.
		if strings.ContainsAny(v, ":/ ") && !strings.HasPrefix(v, "[") && net.ParseIP(v) == nil {
			return Env{}, env.close(&ConfigError{Name: EnvHealthHost, Value: v, Err: errors.New("want a host name or IP address without a port")})
		}
		env.HealthHost, env.HealthHostSet = v, true
	}
	if v := getenv(EnvServiceName); v != "" {
		if err := fleetenv.ValidateService(v); err != nil {
			return Env{}, env.close(&ConfigError{Name: EnvServiceName, Value: v, Err: err})
		}
		env.ServiceName = v
	}
	if v := getenv(EnvInstanceID); v != "" {
		if err := fleetenv.ValidateInstance(v); err != nil {
			return Env{}, env.close(&ConfigError{Name: EnvInstanceID, Value: v, Err: err})
		}
		env.InstanceID = v
	}
	if v := getenv(EnvControlKey); v != "" {
		if env.ControlKeys, err = controlops.ParseKeys(v); err != nil {
			// Never the value: it is a secret, even when it failed to parse.
			return Env{}, env.close(&ConfigError{Name: EnvControlKey, Value: "(redacted)", Err: err})
		}
	}
	if v := getenv(EnvControlInsecure); v != "" {
		if env.ControlInsecure, err = strconv.ParseBool(v); err != nil {
			return Env{}, env.close(&ConfigError{Name: EnvControlInsecure, Value: v, Err: errors.New("want true or false")})
		}
		env.ControlInsecureSet = true
	}
	if v := getenv(EnvDrainDelay); v != "" {
		if env.DrainDelay, err = parseDuration(v); err != nil || env.DrainDelay < 0 {
			return Env{}, env.close(&ConfigError{Name: EnvDrainDelay, Value: v, Err: errors.New("want a duration >= 0 such as 5s (0: no drain)")})
		}
		env.DrainDelaySet = true
	}
	if v := getenv(EnvAdvertiseAddr); v != "" {
		if err := fleetenv.ValidateAdvertiseAddr(v); err != nil {
			return Env{}, env.close(&ConfigError{Name: EnvAdvertiseAddr, Value: v, Err: err})
		}
		env.AdvertiseAddr = v
	}
	return env, nil
}

// close releases the Redis client built so far (it has not connected) and returns err.
func (e *Env) close(err error) error {
	if e.Redis != nil {
		_ = e.Redis.Close()
	}
	return err
}

// parseDuration accepts Go durations and a bare "0".
func parseDuration(v string) (time.Duration, error) {
	if v == "0" {
		return 0, nil
	}
	return time.ParseDuration(v)
}
