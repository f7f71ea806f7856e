package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/phases"
)

// initialise is the library's work in phase 1 as the boot begins (New did
// the rest): it checks that the health server can bind its address, so that
// a port another process holds is found before anything touches Redis.
// LocalConfigurer.ConfigureLocal and the init hooks run after it.
func (in *Instance) initialise(ctx context.Context) (phases.Event, error) {
	return "", in.checkHealthAddr(ctx)
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
