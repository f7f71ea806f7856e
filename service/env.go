package service

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/health"
)

// ErrConfig is matched by errors.Is for every configuration error, and
// process.Main exits 2 on it: on those New and the environment find, before
// anything touches Redis, and on an error that wraps it failing the instance
// later, a *ConfigError returned by a phase (Configurer.Configure) or by
// Service.Run. Restarting the process would only fail the same way.
var ErrConfig = errors.New("invalid configuration")

// ConfigError names an input with a bad value: an environment variable, an
// option, or a setting of the service's own that its Configure reads.
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

// Env is the fleet's environment (REDIS_URL and the SG_* variables of
// package fleetenv), parsed: process.ParseEnv reads it, WithEnv applies it.
// A field applies when it is set: a non-zero value, or its Set flag.
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
	// HealthShowAddrs is SG_HEALTH_SHOW_ADDRS (health.WithAddresses).
	HealthShowAddrs    bool
	HealthShowAddrsSet bool
	ServiceName        string
	InstanceID         string
	// ControlKeys are SG_CONTROL_KEY's keys (controlops.ParseKeys): the first
	// signs, all verify.
	ControlKeys        [][]byte
	ControlInsecure    bool
	ControlInsecureSet bool
	DrainDelay         time.Duration
	DrainDelaySet      bool
	// AdvertiseAddr is SG_ADVERTISE_ADDR, validated; "" when unset.
	AdvertiseAddr string
	// HandOver is what the process this one replaced handed over in
	// SG_RESTART_*: nil unless a restart op exec'd this process.
	HandOver *HandOver
}

// HandOver is what an instance that a restart op stopped hands to the
// process that replaces it (Instance.HandOver; process.Main carries it in
// SG_RESTART_* variables across the exec).
type HandOver struct {
	// Trace is the restart op's span: the next boot's trace links to it.
	Trace trace.SpanContext
	// Control is the control-ops daemon's state: the next process runs the
	// ops sent while the instance restarted, and none this one handled. Nil
	// without Redis.
	Control *controlops.HandOver
}

// WithEnv applies the environment's settings e over the options before it:
// each variable that is set wins, and errors about its value name the
// variable. Main gives it last.
func WithEnv(e Env) Option {
	return optionFunc(func(c *config) {
		set := func(variable string) {
			if c.fromEnv == nil {
				c.fromEnv = map[string]bool{}
			}
			c.fromEnv[variable] = true
		}
		c.envApplied = true
		if e.Redis != nil {
			if c.redis != nil && c.redis != e.Redis {
				c.redisReplaced = c.redis // the boot warns: REDIS_URL wins
			}
			c.redis = e.Redis
			set(fleetenv.RedisURL)
		}
		if e.RedisRequiredSet {
			c.redisRequired, c.redisRequiredSet = e.RedisRequired, true
			set(fleetenv.RedisRequired)
		}
		if e.RedisTimeoutSet {
			c.redisTimeout = e.RedisTimeout
			set(fleetenv.RedisTimeout)
		}
		if e.BootJitterSet {
			c.jitter = e.BootJitter
			set(fleetenv.BootJitter)
		}
		if e.BootTimeoutSet {
			c.bootTimeout = e.BootTimeout
			set(fleetenv.BootTimeout)
		}
		if e.ServiceTTLSet {
			c.ttl = e.ServiceTTL
			set(fleetenv.ServiceTTL)
		}
		if e.HealthPortSet || e.HealthHostSet {
			// Each variable overrides its part of the address.
			host, port, err := net.SplitHostPort(c.healthAddr)
			if err != nil {
				host, port = "", strconv.Itoa(DefaultHealthPort)
			}
			if e.HealthHostSet {
				host = strings.Trim(e.HealthHost, "[]") // JoinHostPort adds the brackets
				set(fleetenv.HealthHost)
			}
			if e.HealthPortSet {
				port = strconv.Itoa(e.HealthPort)
				set(fleetenv.HealthPort)
			}
			c.healthAddr = net.JoinHostPort(host, port)
		}
		if e.ServiceName != "" {
			c.name, c.nameSet = e.ServiceName, true
			set(fleetenv.ServiceName)
		}
		if e.InstanceID != "" {
			c.instance = e.InstanceID
			set(fleetenv.InstanceID)
		}
		if len(e.ControlKeys) > 0 {
			c.controlKeys = e.ControlKeys
			set(fleetenv.ControlKey)
		}
		if e.HealthShowAddrsSet {
			c.healthOpts = append(c.healthOpts, health.WithAddresses(e.HealthShowAddrs))
			set(fleetenv.HealthShowAddrs)
		}
		if e.ControlInsecureSet {
			c.controlInsecure = e.ControlInsecure
		}
		if e.DrainDelaySet {
			c.drainDelay = e.DrainDelay
			set(fleetenv.DrainDelay)
		}
		if e.AdvertiseAddr != "" {
			c.advertiseAddr = e.AdvertiseAddr
			set(fleetenv.AdvertiseAddr)
		}
		if h := e.HandOver; h != nil {
			if h.Trace.IsValid() {
				c.bootLinks = append(c.bootLinks, trace.Link{SpanContext: h.Trace})
			}
			c.controlHandOver = h.Control
		}
	})
}
