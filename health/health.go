// Package health serves a service instance's health over HTTP: /livez, /readyz
// and /healthz, in the application/health+json shape of
// draft-inadarei-api-health-check.
//
// What a state means is read from its role (Snapshot.Role), which the
// state machine's table gives every state (phases.Role), never from the
// state's name: a state added to the table, such as a new control op's,
// needs no edit here. A Snapshot without a Role counts as a working state.
//
//   - /livez answers 200 unless the instance is in a failed state
//     (phases.RoleFailed: failed) or is wedged: in one working state
//     (phases.RoleWorking: a boot phase or a shutdown step) for longer than
//     WithStuckAfter (default 5m). A supervisor restarts on 503. A serving
//     state (running), a draining one (pulling, draining) and a stopped one
//     are never wedged: an instance kept draining by an operator is alive
//     however long it drains.
//   - /readyz answers 200 only in a serving state (phases.RoleServing:
//     running), when no shutdown has begun and every required check passes
//     (Redis, when it is required); 503 otherwise, in particular while
//     draining (out of rotation) and from the first shutdown state on.
//   - /healthz is the whole picture: status pass, warn or fail; 200 for pass and
//     warn, 503 for fail. A draining state warns, naming the state and its
//     one-line doc (Snapshot.Doc); a working or stopped one warns that it is
//     not running.
//
// Every body carries status, state, phase, serviceId (the instance),
// description (the service), version, output (why, when not pass) and checks:
// a map from "component:measurement" to results with status, componentType,
// observedValue (the check's duration, observedUnit "ms"), output and time.
// The lifecycle itself is reported as the "lifecycle:state" check, whose
// observedValue is the time spent in the current state, in seconds. A
// failing check's output is its error's text with every network address
// written AddrHidden, unless WithAddresses(true) (SG_HEALTH_SHOW_ADDRS=true
// under Main).
//
// Checks run in the background, on a goroutine the Server owns (every 5s by
// default) and on Refresh; probes answer from the cached results, so a probe
// never waits on Redis or any other dependency. A check that has not run yet
// reports warn, and a required one keeps /readyz at 503 until it passes.
//
// The Redis check (WithRedis) runs every 30s while it passes
// (DefaultRedisInterval, WithRedisInterval) and every round while it fails:
// a PING every 5s would be most of an idle instance's load on Redis (a fleet
// of 10,000 sends 2,000 a second). A Redis that stops answering shows within
// 30s, a Redis that is back within one round. Any check can have such an
// interval (Every). A failing check never fails /livez: an outage of a
// dependency turns /readyz 503 (when the check is required) and /healthz
// warn or fail, and is no reason to restart the instance.
//
// The endpoints answer GET and HEAD (405 otherwise) with Cache-Control:
// no-store. The server closes a connection that takes longer than 10s to
// send a request (5s for its headers) or stays idle for 30s between requests
// (WithReadTimeout, WithIdleTimeout); it sets no write timeout, so a handler
// mounted with WithHandler may stream for as long as it needs.
//
// The package does not import the lifecycle root package: the root implements
// StateSource, states are plain strings, and their roles and docs come from
// the phases package, a leaf data package.
package health

import (
	"errors"
	"time"

	"github.com/stargazer/lifecycle/phases"
)

// ContentType is the media type of every body.
const ContentType = "application/health+json"

// Statuses, as in draft-inadarei-api-health-check.
const (
	StatusPass = "pass"
	StatusWarn = "warn"
	StatusFail = "fail"
)

// The paths of the endpoints, for probes and their configuration (see
// deploy/kubernetes in the repository).
const (
	PathLive   = "/livez"
	PathReady  = "/readyz"
	PathHealth = "/healthz"
)

// LifecycleCheck is the key under which the instance's state is reported in
// the body's checks.
const LifecycleCheck = "lifecycle:state"

// Errors callers branch on.
var (
	// ErrInvalidAddr is wrapped by New when the listen address is not
	// "host:port" with a numeric port in [0, 65535].
	ErrInvalidAddr = errors.New("health: invalid address")
	// ErrStarted is returned by a second call to Start.
	ErrStarted = errors.New("health: server already started")
	// ErrClosed is returned by Start after Shutdown.
	ErrClosed = errors.New("health: server closed")
)

// Snapshot is the lifecycle state the health endpoints report.
type Snapshot struct {
	Service  string // reported as "description"
	Instance string // reported as "serviceId"
	Version  string
	// State is a lifecycle state name ("init" ... "running" ... "failed").
	State string
	// Role is what State means to the outside, as the state machine's table
	// says (phases.Table.Role): the endpoints decide from it, not from the
	// state's name. Empty counts as phases.RoleWorking (not ready, wedged
	// past WithStuckAfter).
	Role phases.Role
	// Doc is the state's one-line doc from the table (phases.StateInfo.Doc),
	// quoted in outputs; "" if none.
	Doc string
	// Phase is the state's phase label ("1".."9", "S1".."S4"), "" if none.
	Phase string
	// Since is when State was entered; the zero time disables wedge detection.
	Since time.Time
	// Degraded is set when the instance booted without the Redis it wanted.
	Degraded bool
	// RedisRequired makes the "redis:ping" check required whatever WithRedis said.
	RedisRequired bool
	// ShuttingDown makes /readyz answer 503 even while State is still serving.
	ShuttingDown bool
}

// StateSource reports the instance's current lifecycle state. Snapshot is
// called on every probe, concurrently, and must be cheap and non-blocking.
type StateSource interface {
	Snapshot() Snapshot
}

// Response is the body of every endpoint.
type Response struct {
	Status      string                   `json:"status"`
	Version     string                   `json:"version,omitempty"`
	ServiceID   string                   `json:"serviceId,omitempty"`
	Description string                   `json:"description,omitempty"`
	State       string                   `json:"state"`
	Phase       string                   `json:"phase"`
	Output      string                   `json:"output,omitempty"`
	Checks      map[string][]CheckResult `json:"checks"`
}

// CheckResult is one entry of Response.Checks.
type CheckResult struct {
	Status        string    `json:"status"`
	ComponentType string    `json:"componentType,omitempty"`
	ObservedValue float64   `json:"observedValue"`
	ObservedUnit  string    `json:"observedUnit,omitempty"`
	Output        string    `json:"output,omitempty"`
	Time          time.Time `json:"time,omitzero"`
}
