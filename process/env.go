package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/service"
)

// ParseEnv reads and validates the environment through getenv. The first bad
// value is returned as a *ConfigError naming the variable and the value. It builds
// the Redis client from REDIS_URL (fleetenv.NewRedisClient: one server, a
// Redis Cluster with addr=, or a master behind Sentinels with master_name=) but
// does not connect.
//
// With SG_REDIS_TLS_CERT and SG_REDIS_TLS_KEY (a client certificate) or
// SG_REDIS_TLS_CA (the CA that verifies the server) set, the client speaks
// mutual TLS (fleetenv.ParseRedisTLS, fleetenv.WithTLS): the files are
// loaded here, and one that does not load is a *ConfigError naming the
// variable and the path; REDIS_URL must then be rediss:// (redis://,
// unix:// or unset is a *ConfigError naming REDIS_URL). The certificate is
// read again at the next connection after it changed on disk; the CA only
// here.
func ParseEnv(getenv func(string) string) (service.Env, error) {
	env, _, err := parseEnv(getenv)
	return env, err
}

// parseEnv is ParseEnv, also returning the TLS settings of the client (nil
// without them), for Run to give them its logger.
func parseEnv(getenv func(string) string) (service.Env, *fleetenv.RedisTLS, error) {
	var env service.Env
	rt, err := fleetenv.ParseRedisTLS(getenv)
	if err != nil {
		var ve *fleetenv.VarError
		if errors.As(err, &ve) {
			return service.Env{}, nil, &service.ConfigError{Name: ve.Name, Value: ve.Value, Err: ve.Err}
		}
		return service.Env{}, nil, err
	}
	if v := getenv(fleetenv.RedisURL); v != "" {
		env.RedisURL = v
		if env.Redis, err = fleetenv.NewRedisClient(v, fleetenv.WithTLS(rt)); err != nil {
			return service.Env{}, nil, &service.ConfigError{Name: fleetenv.RedisURL, Value: fleetenv.RedactURL(v), Err: err}
		}
	} else if rt != nil {
		var set []string
		for _, name := range []string{fleetenv.RedisTLSCert, fleetenv.RedisTLSKey, fleetenv.RedisTLSCA} {
			if getenv(name) != "" {
				set = append(set, name)
			}
		}
		return service.Env{}, nil, &service.ConfigError{Name: fleetenv.RedisURL, Value: "",
			Err: fmt.Errorf("unset, while %s set: set a rediss:// REDIS_URL, or unset them", strings.Join(set, ", "))}
	}
	env, err = parseRest(getenv, env)
	return env, rt, err
}

// parseRest reads the variables after REDIS_URL into env.
func parseRest(getenv func(string) string, env service.Env) (service.Env, error) {
	var err error
	if v := getenv(fleetenv.RedisRequired); v != "" {
		if env.RedisRequired, err = strconv.ParseBool(v); err != nil {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.RedisRequired, Value: v, Err: errors.New("want true or false")})
		}
		env.RedisRequiredSet = true
	}
	if v := getenv(fleetenv.RedisTimeout); v != "" {
		if env.RedisTimeout, err = parseDuration(v); err != nil || env.RedisTimeout <= 0 {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.RedisTimeout, Value: v, Err: errors.New("want a duration > 0 such as 2s or 500ms")})
		}
		env.RedisTimeoutSet = true
	}
	if v := getenv(fleetenv.BootTimeout); v != "" {
		if env.BootTimeout, err = parseDuration(v); err != nil || env.BootTimeout < 0 {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.BootTimeout, Value: v, Err: errors.New("want a duration >= 0 such as 5m (0 disables it)")})
		}
		env.BootTimeoutSet = true
	}
	if v := getenv(fleetenv.BootJitter); v != "" {
		if env.BootJitter, err = parseDuration(v); err != nil || env.BootJitter < 0 {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.BootJitter, Value: v, Err: errors.New("want a duration >= 0 such as 2s or 0")})
		}
		env.BootJitterSet = true
	}
	if v := getenv(fleetenv.ServiceTTL); v != "" {
		if env.ServiceTTL, err = fleetenv.ParseServiceTTL(v); err != nil {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.ServiceTTL, Value: v, Err: err})
		}
		env.ServiceTTLSet = true
	}
	if v := getenv(fleetenv.HealthPort); v != "" {
		if env.HealthPort, err = strconv.Atoi(v); err != nil || env.HealthPort < 0 || env.HealthPort > 65535 {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.HealthPort, Value: v, Err: errors.New("want a port number 0-65535 (0 picks a free one)")})
		}
		env.HealthPortSet = true
	}
	if v := getenv(fleetenv.HealthHost); v != "" {
		// A bare IPv6 address is accepted too: the Kubernetes downward API
		// gives one (status.podIP) in an IPv6 cluster.
		if strings.ContainsAny(v, ":/ ") && !strings.HasPrefix(v, "[") && net.ParseIP(v) == nil {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.HealthHost, Value: v, Err: errors.New("want a host name or IP address without a port")})
		}
		env.HealthHost, env.HealthHostSet = v, true
	}
	if v := getenv(fleetenv.HealthShowAddrs); v != "" {
		if env.HealthShowAddrs, err = strconv.ParseBool(v); err != nil {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.HealthShowAddrs, Value: v, Err: errors.New("want true or false")})
		}
		env.HealthShowAddrsSet = true
	}
	if v := getenv(fleetenv.ServiceName); v != "" {
		if err := fleetenv.ValidateService(v); err != nil {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.ServiceName, Value: v, Err: err})
		}
		env.ServiceName = v
	}
	if v := getenv(fleetenv.InstanceID); v != "" {
		if err := fleetenv.ValidateInstance(v); err != nil {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.InstanceID, Value: v, Err: err})
		}
		env.InstanceID = v
	}
	if v := getenv(fleetenv.ControlKey); v != "" {
		if env.ControlKeys, err = controlops.ParseKeys(v); err != nil {
			// Never the value: it is a secret, even when it failed to parse.
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.ControlKey, Value: "(redacted)", Err: err})
		}
	}
	if v := getenv(fleetenv.ControlInsecure); v != "" {
		if env.ControlInsecure, err = strconv.ParseBool(v); err != nil {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.ControlInsecure, Value: v, Err: errors.New("want true or false")})
		}
		env.ControlInsecureSet = true
	}
	if v := getenv(fleetenv.DrainDelay); v != "" {
		if env.DrainDelay, err = parseDuration(v); err != nil || env.DrainDelay < 0 {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.DrainDelay, Value: v, Err: errors.New("want a duration >= 0 such as 5s (0: no drain)")})
		}
		env.DrainDelaySet = true
	}
	if v := getenv(fleetenv.AdvertiseAddr); v != "" {
		if err := fleetenv.ValidateAdvertiseAddr(v); err != nil {
			return service.Env{}, closing(&env, &service.ConfigError{Name: fleetenv.AdvertiseAddr, Value: v, Err: err})
		}
		env.AdvertiseAddr = v
	}
	h, err := parseHandOver(getenv)
	if err != nil {
		return service.Env{}, closing(&env, err)
	}
	env.HandOver = h
	return env, nil
}

// parseHandOver reads what the process that exec'd this one handed over
// (SG_RESTART_TRACEPARENT, SG_RESTART_NOT_BEFORE, SG_RESTART_NONCES); nil
// when none of them is set.
func parseHandOver(getenv func(string) string) (*service.HandOver, error) {
	tp, nb, nonces := getenv(EnvRestartTraceparent), getenv(EnvRestartNotBefore), getenv(EnvRestartNonces)
	if tp == "" && nb == "" && nonces == "" {
		return nil, nil
	}
	h := &service.HandOver{}
	if tp != "" {
		ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
		h.Trace = trace.SpanContextFromContext(ctx)
	}
	if nb == "" {
		if nonces != "" {
			return nil, &service.ConfigError{Name: EnvRestartNonces, Value: shorten(nonces), Err: fmt.Errorf("set without %s (both are set by the library across a restart)", EnvRestartNotBefore)}
		}
		return h, nil
	}
	ms, err := strconv.ParseInt(nb, 10, 64)
	if err != nil || ms <= 0 || ms > 1e14 {
		return nil, &service.ConfigError{Name: EnvRestartNotBefore, Value: nb, Err: errors.New("want unix milliseconds (set by the library across a restart)")}
	}
	ns, err := controlops.ParseNonces(nonces)
	if err != nil {
		return nil, &service.ConfigError{Name: EnvRestartNonces, Value: shorten(nonces), Err: err}
	}
	h.Control = &controlops.HandOver{NotBefore: time.UnixMilli(ms), Nonces: ns}
	return h, nil
}

// shorten cuts a long value for an error message.
func shorten(v string) string {
	if len(v) > 64 {
		return v[:64] + "..."
	}
	return v
}

// closing releases the Redis client e built so far (it has not connected)
// and returns err.
func closing(e *service.Env, err error) error {
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
