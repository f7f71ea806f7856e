// The registry's keys, the names that may go in them, and the entry stored
// under each instance's key.

package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stargazer/lifecycle/fleetenv"
)

// Keys that are not per service. See EntryKey and IndexKey for the others.
const (
	// ServicesKey is the set of service names that ever registered.
	ServicesKey = "sg:registry:services"
	// EventsKey is the fleet-wide stream of lifecycle transitions.
	EventsKey = "sg:events"
)

// Sentinel errors, for errors.Is.
var (
	// ErrNotFound: the entry does not exist (never registered, deregistered or expired).
	ErrNotFound = errors.New("registry: entry not found")
	// ErrInvalidName: a service or instance name cannot be used in a key.
	ErrInvalidName = errors.New("registry: invalid name")
	// ErrNameMismatch: an entry's JSON names another service or instance
	// than its key (or none). See NameMismatchError.
	ErrNameMismatch = errors.New("registry: entry names another instance than its key")
)

// NameMismatchError is returned by DecodeEntry, wrapping ErrNameMismatch,
// for an entry whose JSON service or instance is not its key's: whoever
// wrote it, it is not that instance's entry. Service and Instance are what
// the JSON says, as read from Redis (print them escaped).
type NameMismatchError struct {
	Key               string // the entry's key
	Service, Instance string // the JSON's names
}

func (e *NameMismatchError) Error() string {
	// %q escapes what a terminal would act on; the precision bounds what
	// a hostile writer can make the message hold (runes of input).
	return fmt.Sprintf("registry: %s holds an entry that names service %.128q, instance %.128q: not its key's names",
		e.Key, e.Service, e.Instance)
}

func (e *NameMismatchError) Unwrap() error { return ErrNameMismatch }

// DecodeEntry decodes raw, the value stored under EntryKey(service,
// instance), as that instance's entry. Names come from keys: the JSON's
// service and instance must be the key's, and the key's must be valid
// names, or the entry is not that instance's and a reader must skip it
// (see "Names come from keys" in the package documentation). The error
// wraps ErrInvalidName for names that cannot be in a key, ErrNameMismatch
// (a *NameMismatchError) for a JSON that names another service or
// instance, or none, and is the JSON decoder's for a value that is not an
// entry's JSON. Every reader of the registry decodes entries with it.
func DecodeEntry(service, instance string, raw []byte) (Entry, error) {
	if err := ValidateNames(service, instance); err != nil {
		return Entry{}, err
	}
	var e Entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return Entry{}, fmt.Errorf("registry: decoding %s: %w", EntryKey(service, instance), err)
	}
	if e.Service != service || e.Instance != instance {
		return Entry{}, &NameMismatchError{Key: EntryKey(service, instance), Service: e.Service, Instance: e.Instance}
	}
	return e, nil
}

// EntryKey returns the key of one instance's entry:
// "sg:registry:service:{<service>}:<instance>".
func EntryKey(service, instance string) string {
	return "sg:registry:service:{" + service + "}:" + instance
}

// IndexKey returns the key of a service's index of instances:
// "sg:registry:index:{<service>}".
func IndexKey(service string) string {
	return "sg:registry:index:{" + service + "}"
}

// ValidateNames reports whether service and instance can be used in keys,
// by the fleet's naming rules (fleetenv.ValidateService and
// ValidateInstance: no braces, which would change the Redis Cluster hash
// tag, no colons, no control characters). The error names the bad input and
// wraps ErrInvalidName.
func ValidateNames(service, instance string) error {
	if err := fleetenv.ValidateService(service); err != nil {
		return fmt.Errorf("%w: service %q: %v", ErrInvalidName, service, err)
	}
	if err := fleetenv.ValidateInstance(instance); err != nil {
		return fmt.Errorf("%w: instance %q: %v", ErrInvalidName, instance, err)
	}
	return nil
}

// Entry is one instance's registry entry, stored as JSON under EntryKey.
// Times are written in UTC, RFC 3339 with nanoseconds.
type Entry struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	// Status is the lifecycle state name, e.g. "running". Consumers route
	// only to entries whose Status is "running".
	Status string `json:"status"`
	// Phase is the boot or shutdown phase label, e.g. "3", "S1", or "".
	Phase string `json:"phase"`
	// Error says why the instance is failing: set on the entries written
	// while a failed boot or run unwinds and on a failed entry (a phase past
	// its time limit names the phase, its budget and the time spent). Empty,
	// and left out of the JSON, otherwise.
	Error      string    `json:"error,omitempty"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Version    string    `json:"version"`
	StartedAt  time.Time `json:"started_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Degraded   bool      `json:"degraded"`
	HealthAddr string    `json:"health_addr"`
	// Addr is where clients call the instance, "host:port", when it
	// advertises one (service.WithAdvertiseAddr, SG_ADVERTISE_ADDR, or
	// the address its Service bound); empty, and left out of the JSON,
	// otherwise. A Watcher's balancer routes to it.
	Addr string `json:"addr,omitempty"`
	// Owner is the random token of the process that wrote the entry (a
	// Member sets it). See "Ownership" in the package documentation.
	Owner string `json:"owner"`
	// Control says which control ops the instance accepts: "signed" (only
	// ops signed with its key), "insecure" (unsigned ops too) or "disabled"
	// (none); "" when it runs no control-ops daemon.
	Control string `json:"control"`
}
