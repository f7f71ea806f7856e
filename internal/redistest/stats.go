package redistest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stats is what benchmarks read from a server's INFO: the commands it ran,
// the CPU time it used, its memory and its network input.
type Stats struct {
	// Commands counts calls by command name, as INFO commandstats does: the
	// commands a script runs count too (a heartbeat script of three commands
	// is four calls: EVALSHA, GET, ZADD, PEXPIRE). INFO, CONFIG RESETSTAT and
	// CLIENT LIST, which benchmarks send to read the figures, are left out.
	Commands map[string]int64
	// CPU is used_cpu_sys + used_cpu_user: the server's CPU time since start.
	CPU time.Duration
	// UsedMemory is used_memory, in bytes.
	UsedMemory int64
	// NetInput is total_net_input_bytes: what clients sent.
	NetInput int64
	// Clients is connected_clients.
	Clients int64
	// Time is the server's clock when it answered (server_time_usec): the
	// time to divide by, since a reply may reach a busy client late.
	Time time.Time
}

// ReadStats reads INFO commandstats, cpu, memory, stats and clients from c.
func ReadStats(ctx context.Context, c *redis.Client) (Stats, error) {
	info, err := c.Info(ctx, "server", "commandstats", "cpu", "memory", "stats", "clients").Result()
	if err != nil {
		return Stats{}, fmt.Errorf("redistest: INFO: %w", err)
	}
	st := Stats{Commands: map[string]int64{}}
	var sys, user float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(k, "cmdstat_"):
			name := strings.TrimPrefix(k, "cmdstat_")
			if name == "info" || name == "config|resetstat" || name == "client|list" {
				continue
			}
			calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
			st.Commands[name], _ = strconv.ParseInt(calls, 10, 64)
		case k == "used_cpu_sys":
			sys, _ = strconv.ParseFloat(v, 64)
		case k == "used_cpu_user":
			user, _ = strconv.ParseFloat(v, 64)
		case k == "used_memory":
			st.UsedMemory, _ = strconv.ParseInt(v, 10, 64)
		case k == "total_net_input_bytes":
			st.NetInput, _ = strconv.ParseInt(v, 10, 64)
		case k == "connected_clients":
			st.Clients, _ = strconv.ParseInt(v, 10, 64)
		case k == "server_time_usec":
			us, _ := strconv.ParseInt(v, 10, 64)
			st.Time = time.UnixMicro(us)
		}
	}
	st.CPU = time.Duration((sys + user) * float64(time.Second))
	return st, nil
}

// Calls returns the number of commands run, all names together.
func (s Stats) Calls() int64 {
	var n int64
	for _, c := range s.Commands {
		n += c
	}
	return n
}

// Since returns what happened between prev and s: command calls, CPU time
// and network input as differences; memory, clients and time as in s.
func (s Stats) Since(prev Stats) Stats {
	d := Stats{Commands: map[string]int64{}, CPU: s.CPU - prev.CPU, UsedMemory: s.UsedMemory,
		NetInput: s.NetInput - prev.NetInput, Clients: s.Clients, Time: s.Time}
	for k, v := range s.Commands {
		if n := v - prev.Commands[k]; n != 0 {
			d.Commands[k] = n
		}
	}
	return d
}

// String lists the calls by command, most first, e.g. "evalsha=3 get=3".
func (s Stats) String() string {
	names := slices.Collect(maps.Keys(s.Commands))
	slices.SortFunc(names, func(a, b string) int {
		if s.Commands[a] != s.Commands[b] {
			return int(s.Commands[b] - s.Commands[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + strconv.FormatInt(s.Commands[n], 10)
	}
	return strings.Join(parts, " ")
}
