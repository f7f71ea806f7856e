// Package controlops is the fleet control channel: operators send ops (restart,
// pull, a service's own) to the instances of a service through Redis, and every
// instance reports what it did with each.
//
// # Streams and keys
//
//	sg:control:{<name>}                        stream of ops, written by Client.Send (MAXLEN ~ 10000)
//	sg:control:results:{<name>}                stream of results, written by every Daemon (MAXLEN ~ 10000)
//	sg:control:nonce:{<name>}:<instance>:<n>   nonce claimed once per instance (SET NX, expiry ttl_ms + skew)
//	sg:control:slots:{<name>}                  sorted set of rolling-restart slots (instance -> expiry, unix ms)
//	sg:control:pending:{<name>}:<instance>     hash handing a restart to the new process (expires with the slot)
//
// The {<name>} braces are a Redis Cluster hash tag: one service's control keys
// share a slot, so the scripts that take a slot or finish a restart touch one
// node. A fleet-wide op is sent to each service's stream.
//
// # Entries
//
// An op entry has the fields id, op, target ("*" or an instance id), args
// (JSON, may be empty), issued_at (unix ms), ttl_ms, nonce, traceparent (W3C,
// may be empty) and sig: hex HMAC-SHA256, under the key in SG_CONTROL_KEY, of
// Op.Canonical (the other fields plus the service name, length-prefixed, in a
// fixed order). Parse, Sign, Verify and Op.Fresh are pure functions.
//
// A result entry has op_id, op, entry (the op's stream ID), instance, status,
// reason, at (unix ms), state (the instance's state when writing), pid and
// trace_id.
//
// # What a Daemon does with each entry
//
// The Daemon reads its service's stream from the position the stream had when
// Start resolved it (the last ID, so nothing sent after Start returns is
// missed), in order, one entry at a time, and writes one final result per
// entry:
//
//  1. malformed (missing field, bad format, absurd size): rejected.
//  2. addressed to another instance: ignored. Nothing else is checked.
//  3. with a key: unsigned or badly signed, outside [issued_at - skew,
//     issued_at + ttl_ms + skew] (skew 5s by default), or with a nonce this
//     instance already claimed: rejected, never executed.
//  4. otherwise the op runs through Target.Do, under a controlops.handle span
//     that is a child of the entry's traceparent: done when it returns nil,
//     rejected when it returns ErrUnknownOp or ErrInvalidState (the op is
//     not valid in the current state: reported at once, never queued), failed
//     on any other error.
//
// A restart is two results from two processes: the old one writes accepted
// when its shutdown begins, and the new process (same instance id) writes
// done once it is back in running, with its own pid; the restart's trace
// carries both. A restart whose args have max_unavailable > 0 first takes a
// slot in sg:control:slots:{<name>} (a Lua script: at most max_unavailable
// unexpired members), polling until it gets one (WithSlotWait; failed when
// none came in time). The new process gives the slot back when it reaches
// running (Daemon.Running), or the slot expires after WithSlotTTL. The new
// process also resumes reading at the restart entry, so ops sent while it
// restarted are not lost.
//
// # Outages
//
// The Daemon keeps the ID of the last entry it handled. When Redis fails it
// retries with exponential backoff (WithBackoff, on the injected clock) and
// resumes after that ID, so entries that arrived after Redis came back are
// handled exactly once; entries lost with Redis's data are not seen. A
// result that cannot be written is retried the same way before the next entry
// is read.
//
// # Without a key
//
// Without a key the Daemon accepts unsigned entries (a sig, if present, is not
// checked) and still rejects malformed ones; the lifecycle says so at boot and
// in /healthz (check control:auth).
package controlops
