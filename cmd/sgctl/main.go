package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/phases"
)

// Exit codes (see the package documentation).
const (
	exitOK          = 0 // the command did what was asked
	exitFailed      = 1 // an op failed, was rejected, or --wait timed out; or another runtime error
	exitUsage       = 2 // bad command, flag, argument or environment variable
	exitUnreachable = 3 // Redis could not be reached
)

// defaultRedisURL is used when REDIS_URL is unset, as redis-cli defaults to
// 127.0.0.1:6379.
const defaultRedisURL = "redis://127.0.0.1:6379/0"

// pingTimeout bounds the first PING, so an unreachable Redis is reported
// promptly rather than after the client's retries.
const pingTimeout = 5 * time.Second

func main() {
	// The first Ctrl-C cancels ctx: watch exits 0, restart --wait stops
	// waiting. After stop() a second Ctrl-C kills the process as usual.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// go-redis logs each failed dial; sgctl reports the failure itself, once.
	redis.SetLogger(quietLogger{})
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// command is one sgctl subcommand.
type command struct {
	name    string
	summary string
	// usage is the synopsis line, without "sgctl ".
	usage string
	// help is printed under the synopsis by --help.
	help string
	// signs says the command sends ops, so it reads SG_CONTROL_KEY.
	signs bool
	// flags declares the command's flags on fs and returns the function that
	// runs the command with the positional arguments.
	flags func(fs *flag.FlagSet, a *app) func(ctx context.Context, args []string) int
}

var commands = []*command{psCommand, watchCommand, restartCommand, pullCommand, drainCommand, undrainCommand, diagramCommand, dashboardCommand}

// app is one invocation of sgctl: its environment and output streams.
type app struct {
	getenv         func(string) string
	stdout, stderr io.Writer
	now            func() time.Time
	cmd            *command // the command being run

	// watch's waits after a failed read run on clock, with jitter from
	// rand: the real ones when nil (tests set them).
	clock clockwork.Clock
	rand  func() float64

	// table is the lifecycle table sgctl draws: phases.Lifecycle() (tests
	// grow a copy).
	table *phases.Table
}

// run is sgctl with its arguments (without the program name), environment and
// output streams; it returns the exit code. Cancelling ctx ends a watch or a
// wait (exit 0 for watch).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	a := &app{getenv: getenv, stdout: stdout, stderr: stderr, now: time.Now, table: phases.Lifecycle()}
	return a.main(ctx, args)
}

func (a *app) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		a.usage(a.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if args[0] == "help" && len(args) > 1 {
			if c := lookup(args[1]); c != nil {
				a.commandHelp(a.stdout, c)
				return exitOK
			}
			fmt.Fprintf(a.stderr, "sgctl: unknown command %q\nRun 'sgctl --help' for the list of commands.\n", args[1])
			return exitUsage
		}
		a.usage(a.stdout)
		return exitOK
	}
	c := lookup(args[0])
	if c == nil {
		if strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(a.stderr, "sgctl: unknown flag %q before the command\nRun 'sgctl --help' for usage.\n", args[0])
		} else {
			fmt.Fprintf(a.stderr, "sgctl: unknown command %q\nRun 'sgctl --help' for the list of commands.\n", args[0])
		}
		return exitUsage
	}
	fs := flag.NewFlagSet("sgctl "+c.name, flag.ContinueOnError)
	// Parse errors are printed below, once, with a pointer to --help, rather
	// than followed by the whole flag list as the flag package does.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	a.cmd = c
	exec := c.flags(fs, a)
	pos, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		a.commandHelp(a.stdout, c)
		return exitOK
	}
	if err != nil {
		return a.usageError("%s", flagError(err, args[1:]))
	}
	return exec(ctx, pos)
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// parseInterspersed parses flags placed before, between and after positional
// arguments (`sgctl restart demo --wait`), as kubectl does; the flag package
// alone stops at the first positional argument. After "--" everything is
// positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse drops a "--" it stops at: if the argument before rest was
		// "--", everything left is positional.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagError is err from the flag package with the flag spelled as the user
// typed it: the package always writes "-name", also for "--name".
func flagError(err error, args []string) string {
	msg := err.Error()
	for _, arg := range args {
		name, _, _ := strings.Cut(arg, "=")
		if strings.HasPrefix(name, "--") && strings.Contains(msg, " "+name[1:]) {
			return strings.Replace(msg, " "+name[1:], " "+name, 1)
		}
	}
	return msg
}

// usageError prints a usage error of command c naming what is wrong and
// returns exitUsage.
func (a *app) usageError(format string, args ...any) int {
	c := a.cmd
	fmt.Fprintf(a.stderr, "sgctl %s: %s\nRun 'sgctl %s --help' for usage.\n", c.name, fmt.Sprintf(format, args...), c.name)
	return exitUsage
}

func (a *app) usage(w io.Writer) {
	fmt.Fprint(w, `sgctl is the operator CLI of the Stargazer fleet: it reads the Redis service
registry and sends signed control ops.

Usage:
  sgctl <command> [flags] [arguments]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Environment:
  REDIS_URL       redis://, rediss:// or unix:// URL of the registry's Redis;
                  ?addr=host:port... for a cluster, ?master_name=NAME for a master
                  behind Sentinels (default `+defaultRedisURL+`)
  SG_REDIS_TLS_CERT, SG_REDIS_TLS_KEY  client certificate and key (PEM files)
                  for a Redis that requires one; REDIS_URL must be rediss://
  SG_REDIS_TLS_CA  CA certificates (PEM file) that verify Redis (default: the
                  system's roots)
  SG_CONTROL_KEY  HMAC key that signs the control ops (at least 16 bytes;
                  of a comma-separated list, the first signs)
  SG_SERVICE_TTL  the fleet's registry TTL, used by ps to date heartbeats (default 30s,
                  at least 3s)
  SG_DASHBOARD_TOKEN  the token every dashboard request must carry; required
                  when dashboard --listen is not a loopback address

Exit codes:
  0  success
  1  an op failed or was rejected, --wait timed out, or another runtime error
  2  bad command, flag, argument or environment variable
  3  Redis unreachable

Run 'sgctl <command> --help' for a command's flags.
`)
}

func (a *app) commandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  sgctl %s\n", c.summary, c.usage)
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.help, "\n"))
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.flags(fs, a)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	fmt.Fprint(w, "\nFlags:\n")
	for _, n := range names {
		f := fs.Lookup(n)
		kind, usage := flag.UnquoteUsage(f)
		head := "--" + n
		if kind != "" {
			head += " " + kind
		}
		fmt.Fprintf(w, "  %-24s %s", head, usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  %-24s %s\n", "-h, --help", "show this help")
}

// conn is an open, answering Redis connection and the settings sgctl read.
type conn struct {
	client     redis.UniversalClient
	addr       string // host:port (or several, for a cluster), for messages
	url        string // REDIS_URL as given, password redacted
	controlKey []byte // the first key of SG_CONTROL_KEY: it signs
}

func (c *conn) Close() error { return c.client.Close() }

// connect reads REDIS_URL, SG_REDIS_TLS_CERT, SG_REDIS_TLS_KEY,
// SG_REDIS_TLS_CA and, for the commands that sign ops, SG_CONTROL_KEY (with
// the services' own rules: fleetenv.ParseRedisTLS, fleetenv.NewRedisClient,
// controlops.ParseKeys) and PINGs Redis. It prints the problem and returns a
// non-zero exit code when a variable is invalid (exitUsage) or Redis does
// not answer (exitUnreachable).
func (a *app) connect(ctx context.Context) (*conn, int) {
	c := a.cmd
	// Only these variables concern sgctl: an operator's shell may hold
	// other SG_* values meant for a service, which must not fail a command.
	rawURL := a.getenv(fleetenv.RedisURL)
	if rawURL == "" {
		rawURL = defaultRedisURL
	}
	var keys [][]byte
	if c.signs {
		var err error
		if keys, err = controlops.ParseKeys(a.getenv(fleetenv.ControlKey)); err != nil {
			// Never the value: it is a secret, even when it failed to parse.
			return nil, a.configError(fleetenv.ControlKey, "(redacted)", err)
		}
		if msg := controlops.WeakKeys(fleetenv.ControlKey, keys); msg != "" {
			a.warn("%s", msg)
		}
	}
	redisTLS, err := fleetenv.ParseRedisTLS(a.getenv)
	if err != nil {
		var ve *fleetenv.VarError
		if errors.As(err, &ve) {
			return nil, a.configError(ve.Name, ve.Value, ve.Err)
		}
		return nil, a.configError("SG_REDIS_TLS_*", "", err)
	}
	// A rotated certificate that does not load is a warning line (watch and
	// the dashboard run long enough to see one).
	redisTLS.SetLogger(a.warner())
	client, err := fleetenv.NewRedisClient(rawURL, fleetenv.WithTLS(redisTLS))
	if err != nil {
		return nil, a.configError(fleetenv.RedisURL, fleetenv.RedactURL(rawURL), err)
	}
	cn := &conn{client: client, addr: fleetenv.RedisAddr(client), url: fleetenv.RedactURL(rawURL)}
	if len(keys) > 0 {
		cn.controlKey = keys[0]
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := cn.client.Ping(pctx).Err(); err != nil {
		cn.Close()
		if ctx.Err() != nil {
			fmt.Fprintf(a.stderr, "sgctl %s: interrupted while connecting to Redis at %s\n", c.name, cn.addr)
			return nil, exitUnreachable
		}
		fmt.Fprintf(a.stderr, "sgctl %s: %s\n", c.name, cn.unreachable(err))
		return nil, exitUnreachable
	}
	return cn, exitOK
}

// configError prints an invalid environment variable, as the services name
// one, and returns exitUsage. value must already be safe to print.
func (a *app) configError(name, value string, err error) int {
	fmt.Fprintf(a.stderr, "sgctl %s: invalid configuration: %s=%q: %v\n", a.cmd.name, name, value, err)
	return exitUsage
}

// unreachable describes a failure to talk to Redis, naming the address and
// where it came from.
func (c *conn) unreachable(err error) string {
	return fmt.Sprintf("cannot reach Redis at %s (%s=%s): %s", clean(c.addr), fleetenv.RedisURL, clean(c.url), cut(err.Error(), 4*maxCell))
}

// redisError prints err, a failed Redis command, and returns exitUnreachable
// when Redis stopped answering and exitFailed for any other error.
func (a *app) redisError(cn *conn, err error) int {
	c := a.cmd
	if isUnreachable(err) {
		fmt.Fprintf(a.stderr, "sgctl %s: %s\n", c.name, cn.unreachable(err))
		return exitUnreachable
	}
	// Errors may quote Redis data (a key named after a service name).
	fmt.Fprintf(a.stderr, "sgctl %s: %s\n", c.name, cut(err.Error(), 4*maxCell))
	return exitFailed
}

// isUnreachable reports whether err says Redis cannot be talked to (network
// errors, a closed connection, a timeout), as opposed to Redis answering
// with an error.
func isUnreachable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded)
}

// validService checks a SERVICE argument with the services' own naming
// rule, so a typo is reported rather than silently listing nothing.
func validService(name string) error {
	if err := fleetenv.ValidateService(name); err != nil {
		return fmt.Errorf("service %q: %v", name, err)
	}
	return nil
}
