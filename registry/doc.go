// Package registry is the fleet's Redis service registry: every instance of
// every service keeps one entry saying which lifecycle state it is in, and
// every lifecycle transition is appended to one fleet-wide event stream.
//
// # What it stores
//
//	sg:registry:service:{<name>}:<instance>  string, JSON Entry, TTL = service TTL (default 30s)
//	sg:registry:index:{<name>}               sorted set: instance ids scored by expiry (unix ms)
//	sg:registry:services                     set of service names
//	sg:events                                stream, MAXLEN ~ capped (default 10000), one Event per transition
//
// The Redis users that may touch them, with the exact ACL rules of each, are
// in docs/redis-acl.md: an instance (a Member) writes them as sg-instance;
// listing and watching (List, Services, Entry, Events, Watcher) read them as
// sg-reader, with read-only commands on read-only key patterns. A call Redis
// refuses for want of permission (NOPERM) fails with an error matching
// ErrNoPermission that names the key and the rule of the role's line it
// needed ("the sg-instance role needs ~sg:registry:*").
//
// The {<name>} braces are a Redis Cluster hash tag: one service's entries and
// its index share a slot, so listing a service is one multi-key read on one
// node. The services set and the events stream live in other slots; writes
// that touch them use non-transactional pipelines (a ClusterClient splits a
// pipeline per node), never MULTI. Everything works with a
// redis.UniversalClient: a single server, a failover client or a cluster.
//
// # Consistency
//
// The registry is a soft-state view, not a source of truth:
//   - An entry lives for TTL after its last write or heartbeat. An instance
//     that dies without deregistering disappears within TTL.
//   - Listing never uses SCAN or KEYS: Instances reads the index for
//     members whose expiry is in the future, then MGETs their entries.
//     Index members whose entry vanished (eviction, flush) are skipped, and
//     expired members are trimmed by every entry write of the service;
//     reads write nothing.
//   - Index scores are computed from the writer's clock (Option WithClock) and
//     compared with the reader's: the fleet's clocks are assumed to agree to
//     well within the TTL.
//   - Status updates through a Member are asynchronous and coalescing: the
//     entry in Redis converges to the latest status written, intermediate
//     states may never appear in the entry, but every transition is appended
//     to the events stream, in order per instance, at least once (a write
//     retried after a lost reply may duplicate an event).
//   - The services set only grows: it names every service that ever
//     registered; a service without live instances lists no Instances.
//
// # Ownership
//
// Every entry carries an owner token: random, one per process (per Member).
// A Member's first entry write that reaches Redis takes the entry over,
// whatever it held: the entry of a crashed predecessor, or of the process
// this one replaced by exec (a restart keeps the pid and the instance id), is
// normal. Every later write, heartbeat and delete of that Member is a
// compare-and-set on the token: a Lua script on the service's slot (the
// entry and the index share the hash tag, so it runs on Redis Cluster), one
// round trip per write; the events XADD and the services SADD live in other
// slots and stay separate commands of the same pipeline. A Member that finds
// another token has met a second process running with its instance id: it
// logs one error naming both processes (host, pid), reports it by
// Member.Conflict (the lifecycle shows it as the registry:identity check,
// warn, on /healthz), and never writes or deletes the entry again, so
// stopping either process never removes the other's entry. Its events still
// reach the stream. Registry.Register, Heartbeat and Deregister are
// unconditional: they are for tools and tests.
//
// # Outages and foreign data
//
// Status updates are retried by the Member's writer until Redis answers,
// with exponential backoff and full jitter (WithRetryBackoff; default 100ms
// doubling to 5s): the wait after the n-th failure in a row is drawn
// uniformly from [0, min(5s, 100ms·2^(n-1))], so when Redis comes back after
// an outage the fleet's writes arrive spread over the interval, not all at
// once. The writer logs an outage at warn when it begins ("registry: writes
// failing; retrying with backoff", then at most one line a minute, with the
// count left out) and its end at info ("registry: writes recovered"). Heartbeat failures are logged at warn, the first at
// once and then at most one a minute with the count left out. A heartbeat
// that finds the entry gone (restart, FLUSHALL, eviction), not a JSON object,
// or under a key of the wrong type rewrites it. The registry's keys are the
// registry's by contract: a write that finds an entry, index or services key
// of the wrong type deletes it and writes its own, logging the key and the
// type it found at warn. Readers never fail a listing for one bad entry:
// they skip (and log, naming the key) entries that are not JSON or not
// strings, and entries that are not their key's (below).
//
// # Names come from keys
//
// An entry's service and instance are those of its key, never those its JSON
// says: whoever can write to Redis can write, under
// sg:registry:service:{evil}:decoy-2, a JSON saying service "demo" and
// instance "" (an operator's tool would read an empty instance as every
// instance), or saying another running instance's name with another address
// (a Watcher would route that instance's requests there). So every reader
// (List and so Instances, a Watcher's resync and the GET after each event,
// Entry, sgctl, the dashboard) decodes entries with DecodeEntry and skips an
// entry whose JSON's service or instance is not its key's, or is empty, and
// an index member or event that cannot be an instance id; nothing fills a
// missing name from the JSON. Each skip is logged at warn naming the key:
// the first at once, then at most one line a minute per key with the count
// left out (suppressed=N), for at most 256 keys at a time (beyond them the
// new keys share one line a minute), so a dashboard listing every few
// seconds, or a writer making many bad keys, does not flood the log.
//
// # Entries of any size
//
// The registry writes no field longer than MaxErrorLen (an error, 4 KiB) or
// MaxValueLen (any other, 256 bytes): Register, Member and Publish refuse a
// longer one with an error wrapping ErrTooLong that names the field and the
// limit; Member.Update, which cannot fail, cuts it, ending it with "…". So an
// event it writes holds less than MaxEventLen (8 KiB) in fewer than
// MaxEventFields fields. Anyone else who can write to Redis can append an
// event of hundreds of megabytes to sg:events, which every Watcher, sgctl
// watch and the dashboard follow: they never load one over those limits
// (internal/blockread). A Watcher and an EventReader wait in XREAD BLOCK
// through a client of their own whose connections are guarded: a reply that
// holds a field over MaxEventLen, or more than MaxEventFields fields, or that
// passes its byte budget, is refused before go-redis allocates it (the
// connection is closed); the refusal names the entry it happened in, and the
// reader reads again (XREAD, or XRANGE for a range) only the entries before
// it, reports it
// (SkippedEvent) and goes on after it. EventRange and Events read the same way
// through a guarded copy made for the call. A Watcher's resync takes its
// position from Redis's clock (TIME on the stream's node), so it reads no
// event at all; an EventReader's "$" is the last entry's id, read through the
// guard. An oversized event is left out and logged at warn (the first at
// once, then at most one line a minute). An entry's value is read bounded
// wherever the registry reads it (List, so a Watcher's resync, sgctl ps and
// the dashboard; the entries a Watcher's events name; Entry): a read-only
// script compares its STRLEN with MaxEntryJSONLen (64 KiB) before it GETs
// it, and a longer one is skipped unread, with a warning naming its key.
// Through a client that cannot be copied (not a *redis.Client or
// *redis.ClusterClient) nothing can guard a blocking read: a Watcher and an
// EventReader poll every 100ms with a read-only Lua script (EVALSHA_RO) that
// sizes each entry in Redis instead.
//
// Log lines name each attribute once: a Member's lines carry service and
// instance, a Watcher's carry service, added by the registry; the logger
// given to WithLogger must not carry them already. An error goes under the
// key "error".
//
// # Listing and watching a service
//
// List is the one listing of a service: its live entries with their expiry
// times (the index scores), each its key's (see "Names come from keys").
// Instances, sgctl ps and the dashboard read through it, and so does a
// Watcher's resync.
//
// A Watcher (Registry.Watch) is a live view of one service's instances whose
// status is running, the one status consumers route to; package balancer
// sends HTTP requests to them. It keeps the view from two sources:
//   - the sg:events stream, through one blocking XREAD at a time resuming
//     from the last id read (bounded: see "Entries of any size"): an event
//     to running adds the instance once one
//     pipelined GET of its entry and ZSCORE of its index member confirm it
//     (the entry, if it is its key's, says where to call it, Entry.Addr);
//     an event to any other state (pulling, draining, stopping_daemons, ...)
//     removes it. A change reaches the view within one event's delivery: a
//     few milliseconds.
//   - resyncs from List: at start, after a failed read or resync (a
//     reconnect), every TTL, and a quarter TTL before the known expiry of a
//     running instance, so that its heartbeats are seen before the expiry.
//     A resync first reads a position in the stream, Redis's clock (TIME on
//     the stream's node: stream ids are that clock), then the listing: every
//     event before that position is in the listing (a Member writes an entry
//     before its event, in one pipeline), so the reads go on from it (an
//     event of the same millisecond may be applied twice, which changes
//     nothing). A resync
//     repairs what events cannot tell: a missed event, a FLUSHALL, a Redis
//     restart or failover (the new stream's ids need not follow the old
//     ones), an entry that left running without one.
//
// Consistency: the view never holds an instance past its entry's known
// expiry. Watcher.Running leaves out instances whose Expires has passed even
// before the goroutine publishes the pruned view; an instance that stops
// heartbeating leaves at its expiry, within one TTL of its last heartbeat.
// An instance the listing lacks although its expiry has not passed (its
// entry was flushed or evicted, or Redis restarted empty) stays until that
// expiry, and the next resync comes within a heartbeat interval, by when a
// live instance has written its entry again.
//
// Outages: a failed read or resync makes the view not Connected (View.At
// says since when); the Watcher retries with the same jittered backoff,
// always 100ms doubling to 5s (WithRetryBackoff sets the writers' only), logs
// the outage the same way ("registry: watcher reads failing; retrying with
// backoff", then "registry: watcher reads recovered"), and resyncs once Redis
// answers. Meanwhile the view keeps each running
// instance until its known expiry, and no longer: an outage longer than the
// TTL empties it, because the registry can no longer vouch for any
// instance. Reads of the view are an atomic load of an immutable View and
// never wait on Redis.
//
// # Failover
//
// Behind a Sentinel (a go-redis failover client) a write after the promotion
// reaches the new master: the client asks the Sentinel where it is. On Redis
// Cluster, go-redis would keep sending a dead master's slots to its address
// until its periodic slot-map reload, a minute later; so every write,
// heartbeat and read that fails with a network error, MOVED, CLUSTERDOWN or
// READONLY asks the client to reload its map at once (at most twice a second
// per client), and a heartbeat that failed so is retried once, half a second
// later, by the new map. An instance is back on the promoted replica within
// one heartbeat of the promotion. Scripts go by SHA1 (EVALSHA); a promoted
// replica, like a restarted Redis, does not have them: the first write sends
// their text again.
package registry
