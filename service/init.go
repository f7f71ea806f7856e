package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/phases"
)

// initialise is the library's work in phase 1 as the boot begins (New did
// the rest): it says what the defaults in force do, and checks that the
// health server can bind its address, so that a port another process holds
// is found before anything touches Redis. LocalConfigurer.ConfigureLocal and
// the init hooks run after it.
func (in *Instance) initialise(ctx context.Context) (phases.Event, error) {
	in.logDefaults()
	return "", in.checkHealthAddr(ctx)
}

// logDefaults warns about the defaults a service author or an operator
// probably did not mean: the service name nobody set, a control key weaker
// than controlops.MinKeyBits, and, under Main, a Redis that is not there or
// that REDIS_URL replaced.
func (in *Instance) logDefaults() {
	c := &in.cfg
	source := "WithControlKeys"
	if c.fromEnv[fleetenv.ControlKey] {
		source = fleetenv.ControlKey
	}
	if msg := controlops.WeakKeys(source, c.controlKeys); msg != "" {
		in.log.Warn("weak control key: " + msg)
	}
	if !c.nameSet {
		set := "WithServiceName"
		if c.envApplied {
			set = "SG_SERVICE_NAME or WithServiceName"
		}
		in.log.Warn(fmt.Sprintf("no service name set (%s): running as the default, %q, in the registry, the logs and the traces", set, DefaultServiceName))
	}
	switch {
	case c.redisReplaced != nil:
		// The environment wins over the options under Main, REDIS_URL too: an
		// operator points a built service at another Redis without a rebuild.
		in.log.Warn("REDIS_URL wins over the Redis client given with WithRedis: the lifecycle (registry, control ops, health) uses REDIS_URL's; unset REDIS_URL to use yours",
			"redis", in.redisAddr, "with_redis", fleetenv.RedisAddr(c.redisReplaced))
	case c.envApplied && c.redis == nil && c.redisRequiredSet:
		// Not required, said so (required is refused by New): no Redis is meant.
		in.log.Info("running without Redis (REDIS_URL unset, Redis not required): no registry entry, no heartbeat, no control ops")
	case c.envApplied && c.redis == nil:
		in.log.Warn("running without Redis: REDIS_URL is unset, so there is no registry entry, no heartbeat and no control ops, and the Redis ping gate is skipped; " +
			"set REDIS_URL, or SG_REDIS_REQUIRED=false to say that no Redis is meant (SG_REDIS_REQUIRED=true exits 2 without one)")
	}
}

// requireRedisError is New's error for a Redis required in so many words
// (WithRedisRequired(true), SG_REDIS_REQUIRED=true) with no Redis at all:
// nil otherwise. By default Redis is required when there is one.
func (c *config) requireRedisError() error {
	if c.redis != nil || !c.redisRequiredSet || !c.redisRequired {
		return nil
	}
	if c.fromEnv[fleetenv.RedisRequired] {
		return &ConfigError{Name: fleetenv.RedisRequired, Value: "true",
			Err: errors.New("REDIS_URL is unset (and no WithRedis client was given): there is no Redis to require; set REDIS_URL, or unset SG_REDIS_REQUIRED to run without Redis")}
	}
	return &ConfigError{Name: "WithRedisRequired", Value: "true", Err: errors.New("no Redis client (WithRedis, or REDIS_URL under process.Main): there is no Redis to require")}
}

// checkHealthAddr binds the health server's address and closes it at once:
// an address that phase 9 could not bind fails the boot now, as a
// *ConfigError. Port 0 (any free port) is not checked. Phase 9 binds again,
// and reports an address taken meanwhile the same way.
func (in *Instance) checkHealthAddr(ctx context.Context) error {
	if in.health == nil {
		return nil
	}
	addr := in.health.Addr()
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" || port == "" {
		return nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return in.healthListenError(err)
	}
	return ln.Close()
}

// healthListenError turns an error binding the health server's address
// into a *ConfigError when the address is what is wrong (taken, not allowed,
// not this host's), naming what sets it: SG_HEALTH_PORT or SG_HEALTH_HOST
// under Main, which override the option, else WithHealthAddr. A port taken
// is a configuration error: restarting the process does not free it.
func (in *Instance) healthListenError(err error) error {
	var why string
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		why = "another process on this host holds the port"
	case errors.Is(err, syscall.EACCES):
		why = "this process may not bind the port (below 1024 it needs CAP_NET_BIND_SERVICE)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		why = "the host is not an address of this machine"
	default:
		return err
	}
	var op *net.OpError
	if errors.As(err, &op) {
		err = op // it names the address: health's own prefix would repeat it
	}
	addr := in.health.Addr()
	host, port, _ := net.SplitHostPort(addr)
	name, value, fix := "WithHealthAddr", addr, "give it a free port, or port 0 to pick one"
	switch {
	case in.cfg.envApplied && errors.Is(err, syscall.EADDRNOTAVAIL):
		name, value, fix = fleetenv.HealthHost, host, "set SG_HEALTH_HOST to an address of this host, or unset it for all interfaces"
	case in.cfg.envApplied:
		name, value, fix = fleetenv.HealthPort, port, "set SG_HEALTH_PORT to a free port, or 0 to pick one"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		fix = "give it an address of this host"
	}
	return &ConfigError{Name: name, Value: value, Err: fmt.Errorf("health server: %w: %s; %s", err, why, fix)}
}
