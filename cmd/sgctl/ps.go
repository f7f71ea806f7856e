package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/agefmt"
	"github.com/stargazer/lifecycle/registry"
)

var psCommand = &command{
	name:    "ps",
	summary: "List the live instances of one service or of every service",
	usage:   "ps [SERVICE] [--json] [--ttl D]",
	help: `Reads the registry index of each service (sg:registry:index:{<name>}, never
SCAN) and the instances' entries, and prints one row per live instance:

  SERVICE INSTANCE STATUS PHASE HOST PID UPTIME HEARTBEAT DEGRADED CONTROL

UPTIME is the time since the process started (the entry's started_at).
HEARTBEAT is the age of the instance's last heartbeat or status write: the
index scores each instance by the expiry of its entry (unix ms), which every
heartbeat pushes to now+TTL, so the last write happened at score-TTL. The TTL
is the service's SG_SERVICE_TTL, which the entry does not record: sgctl uses
--ttl, by default SG_SERVICE_TTL from its own environment or 30s. A healthy
instance shows an age below TTL/3 (the heartbeat interval, at least 1s).
CONTROL is what the instance accepts on the control channel: signed (only
ops signed with its SG_CONTROL_KEY), insecure (unsigned ops too:
SG_CONTROL_INSECURE=true), or disabled (no key: every op is rejected). Below
the table, a line names each service with instances that accept unsigned
ops.

Without SERVICE every service in sg:registry:services is listed. With --json
the output is one JSON array of the entries (the registry's fields) with
expires_at, uptime_ms and heartbeat_age_ms added (null when unknown).`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
		ttl := new(time.Duration)
		*ttl = registry.DefaultTTL
		var envErr error
		if v := a.getenv(fleetenv.ServiceTTL); v != "" {
			d, err := fleetenv.ParseServiceTTL(v)
			if err != nil {
				envErr = fmt.Errorf("invalid %s=%q: %v", fleetenv.ServiceTTL, v, err)
			} else {
				*ttl = d
			}
		}
		fs.DurationVar(ttl, "ttl", *ttl, "the services' registry `TTL`, to date the last heartbeat")
		return func(ctx context.Context, args []string) int {
			ttlSet := false
			fs.Visit(func(f *flag.Flag) { ttlSet = ttlSet || f.Name == "ttl" })
			if envErr != nil && !ttlSet {
				return a.usageError("%v", envErr)
			}
			return a.ps(ctx, args, *asJSON, *ttl)
		}
	},
}

// psRow is one instance as `ps --json` prints it: the registry entry and
// what sgctl derives from it.
type psRow struct {
	registry.Entry
	// ExpiresAt is the index score: when the entry expires unless refreshed.
	ExpiresAt *time.Time `json:"expires_at"`
	// UptimeMS is the time since StartedAt.
	UptimeMS *int64 `json:"uptime_ms"`
	// HeartbeatAgeMS is now - (ExpiresAt - TTL), at least 0.
	HeartbeatAgeMS *int64 `json:"heartbeat_age_ms"`
}

func (a *app) ps(ctx context.Context, args []string, asJSON bool, ttl time.Duration) int {
	if len(args) > 1 {
		return a.usageError("too many arguments %q: want at most one SERVICE", args)
	}
	if err := fleetenv.ValidateServiceTTL(ttl); err != nil {
		return a.usageError("invalid value %q for flag --ttl: %v", ttl, err)
	}
	var services []string
	if len(args) == 1 {
		if err := validService(args[0]); err != nil {
			return a.usageError("%v", err)
		}
		services = args
	}
	cn, code := a.connect(ctx)
	if cn == nil {
		return code
	}
	defer cn.Close()
	// Entries the registry skips (not JSON, a key of the wrong type) are
	// named on stderr, one line each.
	reg := registry.New(cn.client, registry.WithTTL(ttl), registry.WithLogger(a.warner()))
	if services == nil {
		var err error
		if services, err = reg.Services(ctx); err != nil {
			return a.redisError(cn, err)
		}
		// Anyone who can write to Redis can add members to the set: one that
		// cannot be a service's name is named and skipped, not fatal.
		services = slices.DeleteFunc(services, func(svc string) bool {
			if err := validService(svc); err != nil {
				a.warn(`skipping "%s" in %s: not a service name`, cell(svc), registry.ServicesKey)
				return true
			}
			return false
		})
	}

	now := a.now()
	rows := []psRow{}
	for _, svc := range services {
		// One listing, the registry's: the entries with their index scores,
		// read together (a Watcher's resync reads the same).
		ins, err := reg.List(ctx, svc)
		if err == nil {
			rows = append(rows, a.psRows(now, ttl, ins)...)
		}
		if err != nil {
			if isUnreachable(err) {
				return a.redisError(cn, err)
			}
			// Redis answered with an error for this service's keys (a key of
			// the wrong type): the other services are still worth listing.
			a.warn(`skipping service "%s": %s`, cell(svc), cut(err.Error(), 4*maxCell))
		}
	}

	if asJSON {
		b, err := json.MarshalIndent(rows, "", "  ")
		if err == nil {
			_, err = fmt.Fprintf(a.stdout, "%s\n", safeJSON(b))
		}
		if err != nil {
			fmt.Fprintf(a.stderr, "sgctl ps: writing output: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
	if len(rows) == 0 {
		if len(args) == 1 {
			fmt.Fprintf(a.stderr, "No live instances of service %q.\n", args[0])
		} else {
			fmt.Fprintln(a.stderr, "No live instances.")
		}
		return exitOK
	}
	// Every string cell is cleaned and cut: a 2 MB host field stays one
	// readable cell (--json has it whole).
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tINSTANCE\tSTATUS\tPHASE\tHOST\tPID\tUPTIME\tHEARTBEAT\tDEGRADED\tCONTROL\tADDR")
	insecure := map[string]int{} // service -> instances that accept unsigned ops
	total := map[string]int{}
	var order []string
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%t\t%s\t%s\n",
			cell(r.Service), cell(r.Instance), dash(cell(r.Status)), dash(cell(r.Phase)), dash(cell(r.Host)), pid(r.PID),
			msAge(r.UptimeMS), msAge(r.HeartbeatAgeMS), r.Degraded, controlMode(r.Control), dash(cell(r.Addr)))
		if total[r.Service] == 0 {
			order = append(order, r.Service)
		}
		total[r.Service]++
		if r.Control == string(controlops.ModeInsecure) {
			insecure[r.Service]++
		}
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintf(a.stderr, "sgctl ps: writing output: %v\n", err)
		return exitFailed
	}
	for _, svc := range order {
		if n := insecure[svc]; n > 0 {
			fmt.Fprintf(a.stderr, "warning: service %q: %d of %d instances accept unsigned control ops (%s=true): anyone who can write to Redis can restart them\n",
				svc, n, total[svc], fleetenv.ControlInsecure)
		}
	}
	return exitOK
}

// psRows turns one service's listing into rows.
func (a *app) psRows(now time.Time, ttl time.Duration, ins []registry.Instance) []psRow {
	rows := make([]psRow, 0, len(ins))
	for _, in := range ins {
		r := psRow{Entry: in.Entry}
		if !in.StartedAt.IsZero() {
			r.UptimeMS = ptr(max(0, now.Sub(in.StartedAt).Milliseconds()))
		}
		exp := in.Expires.UTC()
		r.ExpiresAt = &exp
		r.HeartbeatAgeMS = ptr(max(0, now.Sub(exp.Add(-ttl)).Milliseconds()))
		rows = append(rows, r)
	}
	return rows
}

// controlMode shows an entry's control field: one of the modes, "-" when
// absent (an older instance), "?" for anything else (it is read from Redis).
func controlMode(s string) string {
	switch controlops.Mode(s) {
	case controlops.ModeSigned, controlops.ModeInsecure, controlops.ModeDisabled:
		return s
	case "":
		return "-"
	}
	return "?"
}

func ptr[T any](v T) *T { return &v }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func pid(p int) string {
	if p == 0 {
		return "-"
	}
	return strconv.Itoa(p)
}

func msAge(ms *int64) string {
	if ms == nil {
		return "-"
	}
	return agefmt.Format(time.Duration(*ms) * time.Millisecond)
}
