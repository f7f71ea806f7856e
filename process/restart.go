package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/service"
)

// Environment variables of the restart hand-over.
const (
	// EnvRestartExitCode, when set (3-125; 0-2 mean stopped, failed and bad
	// configuration), makes a restart exit with that code for a supervisor to
	// start the process again, instead of exec.
	EnvRestartExitCode = "SG_RESTART_EXIT_CODE"
	// EnvRestartTraceparent is set by a restarting process for its successor:
	// the new boot trace is linked to the restart op's trace.
	EnvRestartTraceparent = "SG_RESTART_TRACEPARENT"
	// EnvRestartNotBefore is set by a process that restarts with exec for its
	// successor: the control-ops daemon's not-before time (unix ms), so that
	// the ops sent while it restarted are not stale (controlops.HandOver).
	EnvRestartNotBefore = "SG_RESTART_NOT_BEFORE"
	// EnvRestartNonces goes with EnvRestartNotBefore: the nonces of the ops
	// the old process handled that the successor must not accept again
	// (controlops.FormatNonces).
	EnvRestartNonces = "SG_RESTART_NONCES"
)

// exitCode is what Run does once the instance ended with result: exit with
// ExitOK, ExitFailed, or ExitConfig when what failed it wraps
// service.ErrConfig (a *service.ConfigError from a phase or Service.Run);
// after a restart, exit with the restart exit code (restartExit, when not 0)
// or replace the process with the plan returned.
func exitCode(in *service.Instance, result error, restartExit int, log *slog.Logger) (int, *restartPlan) {
	h, restart := in.HandOver()
	switch {
	case errors.Is(result, service.ErrConfig):
		// Restarting would only fail the same way: a supervisor that keeps
		// exit 2 from restarting (RestartPreventExitStatus=2) stops here.
		return ExitConfig, nil
	case result != nil:
		return ExitFailed, nil
	case !restart:
		return ExitOK, nil
	}
	if restartExit != 0 {
		log.Info("restarting: exiting for the supervisor", "code", restartExit)
		return restartExit, nil
	}
	log.Info("restarting: replacing the process")
	p := &restartPlan{instance: in.ID(), log: log}
	if h.Control != nil {
		p.notBefore = strconv.FormatInt(h.Control.NotBefore.UnixMilli(), 10)
		p.nonces = controlops.FormatNonces(h.Control.Nonces)
	}
	if h.Trace.IsValid() {
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), h.Trace), carrier)
		p.traceparent = carrier.Get("traceparent")
	}
	return ExitFailed, p
}

// restartPlan is how the process replaces itself after a restart op.
type restartPlan struct {
	instance    string
	traceparent string
	notBefore   string // EnvRestartNotBefore; "" without a control-ops daemon
	nonces      string // EnvRestartNonces
	log         *slog.Logger
}

// exec replaces the process with a fresh copy of the same executable, with the
// same arguments and environment, SG_INSTANCE_ID set to the instance id,
// SG_RESTART_TRACEPARENT to the restart's trace, and SG_RESTART_NOT_BEFORE and
// SG_RESTART_NONCES to the control-ops hand-over. It returns only on failure.
func (p *restartPlan) exec() error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: locating the executable: %w", err)
	}
	env := replaceEnv(os.Environ(), fleetenv.InstanceID, p.instance)
	env = replaceEnv(env, EnvRestartTraceparent, p.traceparent)
	env = replaceEnv(env, EnvRestartNotBefore, p.notBefore)
	env = replaceEnv(env, EnvRestartNonces, p.nonces)
	if err := syscall.Exec(bin, os.Args, env); err != nil {
		return fmt.Errorf("restart: exec %s: %w", bin, err)
	}
	return nil
}

func replaceEnv(env []string, name, value string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	if value != "" {
		out = append(out, name+"="+value)
	}
	return out
}
