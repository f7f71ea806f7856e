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
// # Redis users
//
// docs/redis-acl.md gives the exact ACL rules of each Redis user: a Daemon's
// calls are the sg-instance role's (it reads the op stream, writes results,
// claims nonces, takes slots and hands restarts over), a Client's the
// sg-operator role's (it writes the op stream and reads results); the
// sg-reader role cannot send ops. A call Redis refuses for want of
// permission (NOPERM) fails with an error matching ErrNoPermission that names
// the key and the rule of the role's line it needed; Redis names neither.
//
// What a Daemon cannot do without its rules is found at Start, not at the
// first op: in the round trip that resolves its start position it also reads
// the stream (a non-blocking XREAD that reads nothing) and writes a result
// that Redis refuses whatever the user (XADD with id 0-0, NOMKSTREAM: it
// writes nothing, after the permission check). Start returns a refusal of
// either (the lifecycle fails the boot when Redis is required); the daemon
// runs all the same and reads once the user has the rule. A refusal while
// handling an op (a nonce claim, a restart's hand-over or slot) rejects the
// op with the rule in its reason and reading goes on: retrying would not
// help until the user is given the rule. The daemon sends no MULTI: a user
// refused EXEC would leave a pooled connection inside MULTI, queueing every
// later command sent on it; the hand-over is a script, and the completion of
// a restart three idempotent commands in one pipeline (the results stream
// is written only, and a script's keys need read and write).
//
// A Client's Send and Results return a *PermissionError when refused ("this
// Redis user cannot send control ops (XADD to sg:control:{demo} refused):
// use the sg-operator role: ..."). CheckPermission asks the same without
// sending an op (the XADD with id 0-0, and a non-blocking XREAD of the
// results): the dashboard disables its actions with its answer.
//
// # Entries
//
// An op entry has the fields id, op, target ("*" or an instance id), args
// (JSON, may be empty), issued_at (unix ms), ttl_ms (at most 5 minutes,
// MaxTTL), nonce, traceparent (W3C, may be empty) and sig: hex HMAC-SHA256,
// under the first key of SG_CONTROL_KEY, of Op.Canonical (the other fields
// plus the service name, length-prefixed, in a fixed order). Sign also sets
// key_id, the KeyID of the signing key: it is not signed (whoever can write
// the stream can change it) and serves only to name the sender's key when a
// signature is rejected. Every number (issued_at, ttl_ms, a restart's
// args.max_unavailable) is canonical decimal: digits only, no sign, space or
// leading zero ("0" itself aside); Parse rejects any other spelling, naming
// the field and the value, since issued_at and ttl_ms are signed as
// re-formatted and "+00<ms>" would otherwise verify as "<ms>". Parse, Sign, Verify, VerifyAny, Op.Fresh and
// Op.Stale are pure functions. An op entry holds at most MaxEntryLen bytes
// (80 KiB, its field names and values summed; args at most MaxArgsLen, 64 KiB)
// in at most MaxFields fields: Send refuses a larger one with an error naming
// the field and the limit, and a Daemon rejects one unread (below).
//
// A result entry has op_id, op, entry (the op's stream ID), instance, status,
// reason, at (unix ms), state (the instance's state when writing), pid,
// trace_id, key_id: the KeyID of the key that verified the op (the first
// 8 hex digits of its SHA-256, never the key), empty when none did, and sig
// when a key did: hex HMAC-SHA256, under that key, of Result.Canonical
// (ResultSignatureVersion, the service and the other fields, length-prefixed
// as an op's). A restart's done, written by the new process, is signed with
// the key that verified the restart (the hand-over names it by KeyID). The
// sender holds that key: Client.Results sets Result.Verified when the sig
// verifies under the client's key, and a Client with a key counts a done as
// final only when it is verified (Wait), since whoever can write to Redis
// can append a done for any op. Results of ops no key verified (rejections
// for a bad signature, insecure mode) are unsigned. SignResult and
// VerifyResult are pure functions.
//
// A Daemon
// cuts a reason to MaxReasonLen bytes, so a result holds at most MaxResultLen
// bytes; Client.Results and Client.Wait leave out, unread, a result beyond
// that or MaxFields, as they read through a guarded client of their own (as
// the Daemon reads its stream, below; one connection per call).
//
// # Entries of any size
//
// Whoever can write the stream can append an entry of hundreds of megabytes,
// signed or not. A Daemon never loads one into the process (internal/blockread):
// it waits in XREAD BLOCK through a client of its own whose connections are
// guarded, so a reply that holds a field of more than MaxEntryLen bytes, or
// more than MaxFields fields, or that passes its byte budget, is refused
// before go-redis allocates it, and the connection closed. The refusal names
// the entry it happened in; the daemon reads again, with a non-blocking
// XREAD, only the
// entries before that one, and goes on after it. An oversized entry is
// rejected (ErrOversized; the reason says what was too large and the limits:
// "... a field of 104857600 bytes; an op entry holds at most 81920 bytes in
// 32 fields; rejected unread"; its result names the entry, by its stream ID,
// not its op, which was not read; an entry that passed the guard but is over
// the limits in all is rejected the same way, with its exact size and its op),
// counted by the controlops.entries.oversized metric and logged at warn (the
// first at once, then at most one line a minute). Its start position (the last
// entry's id, read through the guard), the restart hand-over (a hash too
// large to be one is ignored, with a warning) and a nonce claim are read as
// guardedly. Through a client it cannot copy (not a *redis.Client or
// *redis.ClusterClient) it cannot guard a blocking read: it polls the stream
// every block (DefaultSharedBlock, 1s) with a read-only Lua script
// (EVALSHA_RO) that sizes each entry in Redis and returns an oversized one as
// its id, size and short fields.
//
// # Modes
//
// A Daemon is in one of three modes (Mode), which the lifecycle writes in the
// instance's registry entry (control) and sgctl ps shows:
//
//   - signed: keys are set (WithKeys; SG_CONTROL_KEY, comma-separated). Only
//     ops signed with one of them are executed. The first key signs (Client),
//     every key verifies: rotate by deploying "new,old" to the services,
//     then moving the operators to "new", then dropping "old".
//   - insecure: no key, and WithInsecure (SG_CONTROL_INSECURE=true). Unsigned
//     ops are executed; the lifecycle warns at boot and in /healthz (check
//     control:auth). The demo on its embedded Redis runs so.
//   - disabled: no key, no opt-in. The default: the daemon runs and answers
//     every op addressed to its instance with rejected, and a reason that
//     says how to enable ops.
//
// # What a Daemon does with each entry
//
// The Daemon reads its service's stream from the position the stream had when
// Start resolved it (the last ID, so nothing sent after Start returns is
// missed), in order, one entry at a time, and writes one final result per
// entry:
//
//  1. malformed (missing field, bad format, absurd size): rejected; beyond
//     MaxEntryLen or MaxFields, rejected unread (see "Entries of any size").
//  2. addressed to another instance: ignored. Nothing else is checked.
//  3. control ops disabled: rejected (ErrDisabled).
//  4. outside its window [issued_at - skew, issued_at + ttl_ms + skew] (skew
//     5s by default): rejected as expired. Issued before the daemon's
//     not-before time by more than the skew: rejected as stale (see below).
//  5. signed mode: unsigned, or signed with no listed key, rejected; the
//     reason names the key id the entry says it was signed with and the key
//     ids the instance accepts ("bad signature: signed with key 1a2b3c4d;
//     this instance accepts key ids 5e6f7a8b, 9c0d1e2f"). Then the
//     nonce: rejected when this process already used it (replay memory),
//     when the memory is full, or when this instance claimed it in Redis
//     for another entry.
//  6. otherwise the op runs through Target.Do, under a controlops.handle span
//     that is a child of the entry's traceparent: done when it returns nil,
//     rejected when it returns ErrUnknownOp or ErrInvalidState (the op is
//     not valid in the current state: reported at once, never queued), failed
//     on any other error.
//
// # Replay protection
//
// A nonce is accepted once per instance. Each signed op that passes steps 3
// to 5 is remembered by the process, whatever happens next (executed,
// failed or rejected by the target), until its window closes, and claimed in
// Redis (sg:control:nonce:...) for the same time. The process's memory is what
// protects: FLUSHALL, a Redis restart or a DEL of the claim reopens nothing.
// It is bounded (WithReplayMemory, DefaultReplayMemory nonces): expired
// nonces are evicted first; when it is full of unexpired ones the op is
// rejected (ErrReplayMemoryFull, counted by the controlops.replay_memory.full
// metric) rather than executed unremembered. Only ops signed with a listed
// key reach the memory, so only a key holder can fill it. The Redis claim
// still covers a process of the instance that was restarted by a supervisor
// (below).
//
// The one window: an op runs once more on an instance when Redis lost its
// claim (FLUSHALL, a restart without persistence, a failover before
// replication, eviction, a DEL), a new process of the instance id was started
// other than by the exec hand-over (a supervisor restart, a crash and
// restart, a stop and start with a fixed instance id), and that process's
// not-before time (its start) is no later than the op's issued_at + skew.
// So only the ops the previous process ran in the last skew (5s) before the
// new one started can run again, each at most once per such process (which
// then remembers it). Closing it would take storage that outlives the
// process and that the wipe cannot reach; the fleet's shared storage is
// Redis itself, and an instance may have no disk.
//
// A process also has a not-before time, by default its start (New): an op
// issued before it, beyond the skew, is stale, so an op captured earlier and
// replayed to a freshly started process is rejected although its window is
// still open. The window itself is at most MaxTTL (5 minutes).
//
// # Restart
//
// A restart is two results from two processes: the old one writes accepted
// when its shutdown begins, and the new process (same instance id) writes
// done once it is back in running, with its own pid; the restart's trace
// carries both. A restart begins only when the target says it may
// (Target.Restartable: its state's role in the instance's table is serving
// or draining, and no stop was asked for); otherwise it is rejected
// (ErrInvalidState). A restart whose args have max_unavailable > 0 first takes a
// slot in sg:control:slots:{<name>} (a Lua script: at most max_unavailable
// unexpired members), polling until it gets one (WithSlotWait; failed when
// none came in time). The new process gives the slot back when it reaches
// running (Daemon.Running), or the slot expires after DefaultSlotTTL (2
// minutes: it covers a shutdown and a boot). The slots are advisory: whoever
// can write Redis can delete the sorted set and let every instance go at
// once (the security review deleted it every 20 ms and saw all three
// instances in starting together). sgctl and the dashboard therefore no
// longer send max_unavailable: they run a rolling restart themselves, one
// op per instance, the next only once a signed done came back (package
// cmd/sgctl/internal/rollout). The daemon still honours the arg for the
// ops of older tools. The new
// process resumes reading at the restart entry (from the pending hash), so
// ops sent while it restarted are not lost: it reads them once it is running
// (Daemon.Running), when it can execute them. It finishes the restart (writes
// done) without executing it again.
//
// Staleness makes the hand-over subtle: the ops sent while the instance
// restarted, and the restart op itself, were issued before the new process
// started, and the old process's replay memory died with it. Nothing read
// from Redis may widen what the new process accepts, since whoever can write
// Redis can forge the pending hash as easily as wipe the nonce claims. So the
// old process passes a HandOver (Daemon.HandOver, WithHandOver) outside
// Redis: the lifecycle puts it in the environment of the process it execs
// (SG_RESTART_NOT_BEFORE, SG_RESTART_NONCES). Its not-before time is the
// restart op's issued_at (or when the old daemon stopped reading, if earlier,
// and never earlier than the old process's own not-before), so the ops sent
// meanwhile are executed; its nonces are those the old process remembers
// that the new one would not reject as stale (the restart op, and any op
// issued around it), so none of them can be replayed after a wipe. The
// pending hash only says where to resume reading and which op to report
// done: a forged one can make the process re-read old entries, which the
// not-before time and the handed nonces reject.
//
// A supervisor restart (the process exits with SG_RESTART_EXIT_CODE and is
// started again) has no such channel: the new process's not-before time is
// its own start, so ops sent while it was down, and issued more than the skew
// before it came back, are rejected as stale (reported, not executed: send
// them again), and the ops the old process handled in the last skew before
// the new one started are protected only by their Redis claims. Prefer the
// default exec restart where ops are sent during restarts.
//
// # Threat model
//
// Whoever can write to the service's keys in Redis can append entries, delete
// or rewrite any key, FLUSHALL, and read every op sent.
//
//   - Without a key (disabled): they can do nothing through this channel;
//     every op is rejected.
//   - Insecure: they can restart or pull every instance at will, bypassing
//     max_unavailable. Use it only where Redis is private to one trusted
//     process, as in the demo's embedded Redis.
//   - With a key: they cannot forge, alter or retarget an op (the signature
//     covers every field and the service), nor execute a captured op again on
//     an instance (the replay memory and the not-before time, which live in
//     the processes and the environment, not in Redis), except in the window
//     stated under "Replay protection". What remains to them:
//     withholding or deleting ops and results, filling the streams, forging
//     registry entries and results other than a done (a forged failure or
//     rejection is shown as Redis says; a done without the sender's
//     signature is not taken for one), and
//     delaying an op: holding an entry back and delivering it later, within
//     its window (at most 5 minutes after it was issued), to an instance
//     that has not handled it yet.
//   - In every mode: appending entries of any size. The instances never load
//     them (see "Entries of any size"): each costs an instance a result, a
//     warning line a minute and one reconnection. It costs Redis the entry's
//     memory and, at once, a copy of it for every instance blocked on the
//     stream (XREAD serves each its own reply; freed as each closes its
//     connection): bound what Redis accepts (proto-max-bulk-len,
//     client-query-buffer-limit) and who may write the streams (ACL).
//
// The key protects the authority to act on the fleet: keep it out of Redis,
// logs and the registry (results name a key by its KeyID only). A leaked key
// gives its holder what an operator has until it is rotated out.
//
// # Outages
//
// The Daemon keeps the ID of the last entry it handled. When Redis fails it
// retries with exponential backoff and full jitter (WithBackoff; the
// project's one retry policy, on the injected clock: each wait is drawn
// from [0, the doubling ceiling], so instances that failed together do not
// retry together) and resumes after that ID, so entries that arrived after
// Redis came back are handled exactly once; entries lost with Redis's data
// are not seen.
//
// When Redis lost the stream itself (FLUSHALL, a restart without
// persistence, a failover that lost writes), the new stream's ids start
// again from the server's clock: the first op may get the very id of the
// last one handled (the same millisecond) or a lower one (a clock behind),
// which an XREAD after that id never returns. So after every read the
// daemon reads the entry at its position (a non-blocking XREAD): another
// entry there, or none while nothing follows, means the stream was reset;
// it warns and reads the new stream from its start, within one block
// (30s by default) of the op's arrival: late, in this rare case, but
// answered. What it handled before and finds again is rejected by
// the replay memory, with a result: no op ends unanswered.
//
// A result that cannot be written is retried the same way
// before the next entry is read, and so is the new process's completion of
// a restart. Each of these loops logs one warn line when its failures
// begin, at most one a minute while they last, and one info line when
// Redis answers again.
//
// An idle Daemon costs Redis two XREADs per block (DefaultBlock, 30s: the
// blocked one, and the check of its position above): the blocked read returns as soon as an entry is added, and Stop ends it at once by
// closing the daemon's own reader client (through a client it cannot copy:
// one script every DefaultSharedBlock). Behind a Sentinel the reader, a
// copy of the failover client, asks the Sentinel for the master on every
// reconnection; on Redis Cluster every failed read or write asks the client
// that failed to reload its slot map (at most twice a second), and the daemon
// retries at least every second meanwhile, so it reads the promoted replica
// within about a second of the promotion. The entries written to the
// old master and not yet replicated when it died are lost, as with any Redis
// failover.
package controlops
