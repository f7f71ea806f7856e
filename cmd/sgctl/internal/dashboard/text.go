package dashboard

import (
	"time"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/visible"
	"github.com/stargazer/lifecycle/registry"
)

// Values read from Redis are shown by package visible's rule, sgctl's: the
// templates' clean and cell are visible.Clean and visible.Cell, JSON shown
// in a page goes through visible.JSON, and app.js applies the same rule to
// what arrives live. html/template then escapes the result for its
// context, so '<' stays text: visible is about what an operator sees, not
// about HTML.

// Lengths of the values the fleet pages, /api/fleet and the live updates
// carry: a table cell's, as sgctl ps, and an event's error, as sgctl
// watch. The instance page has the whole entry.
const (
	maxCell  = visible.MaxCell
	maxError = 4 * visible.MaxCell
)

// cutEntry returns e with every string field read from Redis cut to
// maxCell characters (visible.Truncate, not cleaned: the page cleans), so
// that a 15 MB value costs a page, /api/fleet and a live update 128
// characters. The names are the key's (registry.DecodeEntry), short
// already.
func cutEntry(e registry.Entry) registry.Entry {
	for _, f := range []*string{&e.Status, &e.Phase, &e.Error, &e.Host, &e.Version, &e.HealthAddr, &e.Addr, &e.Owner, &e.Control} {
		*f = visible.Truncate(*f, maxCell)
	}
	return e
}

// unixMS is t in unix milliseconds, 0 for the zero time.
func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
