// Package agefmt writes a duration the way sgctl ps and the dashboard show
// ages (uptime, heartbeat age, a phase's length): its two largest units, as
// kubectl prints ages. The dashboard's app.js follows the same rule for
// values that arrive live.
package agefmt

import (
	"fmt"
	"strconv"
	"time"
)

// Format renders d as "850ms", "42s", "5m3s", "3h12m" or "2d5h", truncating
// what the two units leave out. A negative d (clock skew) renders as "0ms".
func Format(d time.Duration) string {
	switch {
	case d < 0:
		return "0ms"
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}
