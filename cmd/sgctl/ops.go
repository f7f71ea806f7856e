package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/stargazer/lifecycle"
)

// defaultOpTimeout bounds --wait when --timeout is not given.
const defaultOpTimeout = 5 * time.Minute

// opFlags are the flags restart and pull share.
type opFlags struct {
	instance       string
	wait           bool
	timeout        time.Duration
	maxUnavailable int // restart only
	asJSON         bool
}

var restartCommand = &command{
	name:    "restart",
	signs:   true,
	summary: "Restart the instances of a service, one slot at a time",
	usage:   "restart SERVICE [--instance ID] [--max-unavailable N] [--wait] [--timeout D] [--json]",
	help: `Sends a signed restart op to the service's control stream
(sg:control:{<name>}). Each addressed instance leaves running through the
shutdown states and replaces itself with a fresh process of the same binary,
arguments, environment and instance id.

With --max-unavailable N at most N instances of the service are out of
running because of the op at any moment: instances take a slot in Redis
before restarting and release it when they are back in running.

With --wait sgctl prints each instance's result as it arrives and its return
to running, and exits 0 only when every addressed instance reported done and
runs again (a new process: a new started_at) before --timeout. It exits 1
when an instance reported failed or rejected, or the timeout passed.`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		f := &opFlags{}
		f.declare(fs)
		fs.IntVar(&f.maxUnavailable, "max-unavailable", 0, "at most `N` instances out of running at once (0: no limit)")
		return func(ctx context.Context, args []string) int {
			return a.op(ctx, "restart", args, f)
		}
	},
}

var pullCommand = &command{
	name:    "pull",
	signs:   true,
	summary: "Make the instances of a service re-read their settings",
	usage:   "pull SERVICE [--instance ID] [--wait] [--timeout D] [--json]",
	help: `Sends a signed pull op to the service's control stream (sg:control:{<name>}).
Each addressed instance goes running -> pulling -> running, calling the pull
handler the service registered (the demo re-reads its settings).

With --wait sgctl prints each instance's result as it arrives and exits 0
only when every addressed instance reported done and is running again before
--timeout; 1 when one reported failed or rejected, or the timeout passed.`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		f := &opFlags{}
		f.declare(fs)
		return func(ctx context.Context, args []string) int {
			return a.op(ctx, "pull", args, f)
		}
	},
}

func (f *opFlags) declare(fs *flag.FlagSet) {
	fs.StringVar(&f.instance, "instance", "", "send the op to this instance `ID` only (default: every instance)")
	fs.BoolVar(&f.wait, "wait", false, "wait for every instance's result and its return to running")
	fs.DurationVar(&f.timeout, "timeout", defaultOpTimeout, "with --wait, give up after `D`")
	fs.BoolVar(&f.asJSON, "json", false, "print results as JSON lines")
}

// checkOpArgs validates what restart and pull share; it returns the service.
func (a *app) checkOpArgs(args []string, f *opFlags) (string, int, bool) {
	if len(args) == 0 {
		return "", a.usageError("missing SERVICE argument"), false
	}
	if len(args) > 1 {
		return "", a.usageError("too many arguments %q: want one SERVICE", args), false
	}
	if err := validService(args[0]); err != nil {
		return "", a.usageError("%v", err), false
	}
	if f.instance != "" {
		if err := lifecycle.ValidateInstanceID(f.instance); err != nil {
			return "", a.usageError("invalid value %q for flag --instance: %v", f.instance, err), false
		}
	}
	if f.timeout <= 0 {
		return "", a.usageError("invalid value %q for flag --timeout: want a duration > 0", f.timeout), false
	}
	if f.maxUnavailable < 0 {
		return "", a.usageError("invalid value %d for flag --max-unavailable: want 0 (no limit) or more", f.maxUnavailable), false
	}
	return args[0], 0, true
}

func (a *app) op(ctx context.Context, op string, args []string, f *opFlags) int {
	service, code, ok := a.checkOpArgs(args, f)
	if !ok {
		return code
	}
	cn, code := a.connect(ctx)
	if cn == nil {
		return code
	}
	defer cn.Close()
	fmt.Fprintf(a.stderr, "sgctl %s: %s: not implemented yet\n", op, service)
	return exitFailed
}
