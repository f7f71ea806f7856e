package lifecycle

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/redisurl"
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
}

// Environment variable names (DESIGN.md, "Environment"). SG_HEALTH_HOST is this
// library's addition: the interface the health server binds (default: all).
const (
	EnvRedisURL      = "REDIS_URL"
	EnvRedisRequired = "SG_REDIS_REQUIRED"
	EnvRedisTimeout  = "SG_REDIS_TIMEOUT"
	EnvBootJitter    = "SG_BOOT_JITTER"
	EnvBootTimeout   = "SG_BOOT_TIMEOUT"
	EnvServiceTTL    = "SG_SERVICE_TTL"
	EnvHealthPort    = "SG_HEALTH_PORT"
	EnvHealthHost    = "SG_HEALTH_HOST"
	EnvServiceName   = "SG_SERVICE_NAME"
	EnvInstanceID    = "SG_INSTANCE_ID"
	EnvControlKey    = "SG_CONTROL_KEY"
	// EnvControlInsecure=true accepts unsigned control ops when no key is set.
	EnvControlInsecure = "SG_CONTROL_INSECURE"
)

// MinServiceTTL is the smallest accepted registry TTL: below it the heartbeat
// (every max(1s, TTL/3)) could not keep the entry alive.
const MinServiceTTL = 3 * time.Second

var (
	serviceNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62})$`)
	instanceIDRE  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,127})$`)
)

// ParseEnv reads and validates the environment through getenv. The first bad
// value is returned as a *ConfigError naming the variable and the value. It builds
// the Redis client from REDIS_URL but does not connect.
func ParseEnv(getenv func(string) string) (Env, error) {
	var env Env
	var err error
	if v := getenv(EnvRedisURL); v != "" {
		env.RedisURL = v
		if env.Redis, err = redisFromURL(v); err != nil {
			return Env{}, &ConfigError{Name: EnvRedisURL, Value: redisurl.Redact(v), Err: err}
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
		if env.ServiceTTL, err = parseDuration(v); err != nil || env.ServiceTTL < MinServiceTTL {
			return Env{}, env.close(&ConfigError{Name: EnvServiceTTL, Value: v, Err: fmt.Errorf("want a duration >= %s such as 30s", MinServiceTTL)})
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
		if strings.ContainsAny(v, ":/ ") && !strings.HasPrefix(v, "[") {
			return Env{}, env.close(&ConfigError{Name: EnvHealthHost, Value: v, Err: errors.New("want a host name or IP address without a port")})
		}
		env.HealthHost, env.HealthHostSet = v, true
	}
	if v := getenv(EnvServiceName); v != "" {
		if err := ValidateServiceName(v); err != nil {
			return Env{}, env.close(&ConfigError{Name: EnvServiceName, Value: v, Err: err})
		}
		env.ServiceName = v
	}
	if v := getenv(EnvInstanceID); v != "" {
		if err := ValidateInstanceID(v); err != nil {
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
	return env, nil
}

// close releases the Redis client built so far (it has not connected) and returns err.
func (e *Env) close(err error) error {
	if e.Redis != nil {
		_ = e.Redis.Close()
	}
	return err
}

// ValidateServiceName reports whether name can be a service name: lower-case
// letters, digits, '.', '_' and '-', at most 63 characters. Braces and colons
// are refused because the name is part of Redis keys and their hash tag.
func ValidateServiceName(name string) error {
	if !serviceNameRE.MatchString(name) {
		return errors.New("want 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// ValidateInstanceID reports whether id can be an instance id: letters, digits,
// '.', '_' and '-', at most 128 characters.
func ValidateInstanceID(id string) error {
	if !instanceIDRE.MatchString(id) {
		return errors.New("want 1-128 characters of A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// parseDuration accepts Go durations and a bare "0".
func parseDuration(v string) (time.Duration, error) {
	if v == "0" {
		return 0, nil
	}
	return time.ParseDuration(v)
}

// redisFromURL builds a client from a redis:// or rediss:// URL. A URL with addr=
// query parameters names several nodes and gives a cluster client.
//
// The client honours context deadlines (ContextTimeoutEnabled), so that
// SG_REDIS_TIMEOUT bounds every call a transition waits for, retries
// included, and dials once per attempt (DialerRetries 1, unless the URL says
// otherwise): go-redis's default of five dials 100ms apart, times four
// attempts, makes a refused connection cost 1.7s instead of milliseconds.
func redisFromURL(raw string) (redis.UniversalClient, error) {
	// Not url.Parse: its error quotes the URL, password included; and a URL
	// whose password holds an unescaped '#' or '/' would parse with part of
	// the password as the host.
	u, err := redisurl.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix" {
		return nil, fmt.Errorf("scheme %q: want redis://, rediss:// or unix://", u.Scheme)
	}
	if u.Query().Has("addr") {
		opt, err := redis.ParseClusterURL(raw)
		if err != nil {
			return nil, err
		}
		opt.ContextTimeoutEnabled = true
		if !u.Query().Has("dialer_retries") {
			opt.DialerRetries = 1
		}
		return redis.NewClusterClient(opt), nil
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	opt.ContextTimeoutEnabled = true
	opt.DialerRetries = 1
	return redis.NewClient(opt), nil
}
