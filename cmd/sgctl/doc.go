// Command sgctl is the operator CLI of a Stargazer fleet: it reads the Redis
// service registry every instance writes (package registry) and sends signed
// control ops to the instances' control-ops daemons (package controlops).
//
// # Usage
//
//	sgctl ps [SERVICE] [--json] [--ttl D]
//	sgctl watch [SERVICE] [--instance ID] [--json] [--from ID]
//	sgctl restart SERVICE [--instance ID] [--max-unavailable N] [--wait] [--timeout D] [--json]
//	sgctl pull SERVICE [--instance ID] [--wait] [--timeout D] [--json]
//	sgctl drain SERVICE [--instance ID] [--wait] [--timeout D] [--json]
//	sgctl undrain SERVICE [--instance ID] [--wait] [--timeout D] [--json]
//	sgctl diagram [--format mermaid|dot|svg] [--highlight STATE]
//	sgctl dashboard [--listen ADDR] [--read-only] [--ttl D]
//
// Every command has --help; flags may come before or after the arguments
// (as with kubectl), as -flag or --flag, with "--flag value" or
// "--flag=value".
//
// ps prints a table of live instances (SERVICE INSTANCE STATUS PHASE HOST PID
// UPTIME HEARTBEAT DEGRADED CONTROL ADDR) read from the registry index of each
// service, never with SCAN, through the registry's one listing
// (registry.Registry.List, which a registry.Watcher resyncs from too); --json prints the entries as a JSON array with
// expires_at, uptime_ms and heartbeat_age_ms added. HEARTBEAT, the age of the
// instance's last heartbeat or status write, is derived from the index
// score, which is the entry's expiry (unix ms) and every heartbeat sets to
// now+TTL: age = now - (score - TTL). The entry does not record the
// service's TTL, so sgctl takes it from --ttl, by default from SG_SERVICE_TTL
// in its own environment, else 30s; a wrong TTL shifts every age by the
// difference. (updated_at is not used: heartbeats refresh the TTL without
// rewriting the entry.) CONTROL is what the instance accepts on the control
// channel: signed, insecure (unsigned ops too) or disabled (none); a warning
// on stderr names each service with instances that accept unsigned ops. ADDR
// is where clients call the instance, when it advertises an address.
//
// watch follows the fleet-wide events stream sg:events with blocking reads
// and prints one line per transition (TIME SERVICE INSTANCE FROM -> TO EVENT
// GUARD PHASE ERROR), or one JSON object per line with --json. It starts with
// the transitions made after it started (--from 0 replays the capped stream,
// --from ID resumes after a stream id), keeps retrying from where it was when
// Redis stops answering (one line on stderr per attempt; the waits grow
// from 100ms to at most 5s, each drawn at random below its limit, as the
// services' retries are), and ends with exit code 0 on Ctrl-C.
//
// pull, drain and undrain send one op, signed with SG_CONTROL_KEY, to the
// service's control stream sg:control:{<name>}, addressed to every instance
// ("*") or to --instance; so does restart with --instance. Without --wait
// they print the op's id and return. With --wait they follow the results
// stream sg:control:results:{<name>} and the registry and print each
// instance's results (accepted, done, failed, rejected) and its return to
// running (for a restart: a new process, with a new started_at and pid);
// they exit 0 when every instance that was running when the op was sent
// reported done and runs again, and 1 when one failed, was rejected, or
// --timeout passed first. With a key, a done counts only when the instance
// signed it with that key: a done anyone else wrote to Redis is printed
// with "not signed with SG_CONTROL_KEY" and waited past.
//
// restart without --instance is a rolling restart that sgctl runs itself
// (package internal/rollout), --wait or not: it sends each instance a
// signed restart op of its own, and the next one only when an instance it
// restarted is back (its new process reported a done signed with
// SG_CONTROL_KEY, and the registry shows it running in a new process), so
// at most --max-unavailable N (default 1, as the dashboard) are out of
// running at a time because of it; 0 sends every op at once. The limit
// lives in sgctl, not in Redis: deleting or rewriting keys, forging
// results or registry entries can delay or stop the rollout, never let
// a second instance go early. --timeout is per instance. The first
// instance that does not come back (failed, rejected, or not back within
// --timeout) stops the rollout: no further op, and sgctl exits 1 naming it
// and the instances it did not touch; Ctrl-C stops it the same way (the
// ops sent still run). Two rollouts of one service at once (two sgctl, or
// sgctl and a dashboard) each keep their own limit. The instances'
// rolling-restart slots (sg:control:slots:{<name>}, taken by an op whose
// args carry max_unavailable) are no longer used by sgctl; the daemons
// still honour such ops from older tools. A restart replaces each process
// with exec: the new image has a new started_at but keeps its pid.
// Instances that are not running when the op is planned (still booting)
// are named on stderr and not restarted: their daemon may not have started
// yet.
// drain takes instances out of rotation without stopping them (running ->
// draining: readiness 503, registry status draining, Service.Run goes on),
// and undrain puts them back (draining -> running); with --wait they exit 0
// once every addressed instance reported done and the registry shows the new
// status. A restart works from draining too, and is sent to draining
// instances as well as running ones; pull only to running ones, drain to
// running ones, undrain to draining ones.
// Instances that will reject the op are named on stderr before it is sent:
// those with control ops disabled, and, when SG_CONTROL_KEY is unset, those
// that require signed ops.
//
// diagram prints the lifecycle's state diagram from the transition table in
// package phases, as Mermaid (default), Graphviz DOT or SVG (rendered by the
// dot binary, which must be on PATH). It needs no Redis.
//
// dashboard serves the fleet in a browser (default http://127.0.0.1:8080/):
// per service, the count of instances in each state and one row per
// instance (status coloured by the diagram's state groups, phase, host, pid,
// version, uptime, heartbeat age, degraded, control mode, error), updated
// within a second of each transition over server-sent events; per instance,
// its last boot as a waterfall of phase durations read from sg:events, the
// state diagram with its current state highlighted (Graphviz dot on PATH),
// and its registry entry as JSON; and the actions of restart, pull, drain
// and undrain (one instance: Drain shown on a running instance, Undrain on
// a draining one; or a rolling restart of a service with a max-unavailable
// limit, which the dashboard runs itself as sgctl restart does, one at a
// time per service), each confirmed in the page, sent with the same signed
// controlops client as the op commands, and planned and followed instance
// by instance as they do with --wait (the same statuses accept each op). One
// dashboard process reads sg:events with one blocking XREAD at a time,
// however many browsers are connected, and a browser that reconnects
// resumes after the last transition it saw. SG_CONTROL_KEY signs the ops
// and never leaves the process; without it ops go unsigned and only
// instances in insecure mode accept them, which the page says. The
// dashboard listens on loopback by default and then accepts only the
// loopback host names in the Host header (against DNS rebinding); a
// non-loopback --listen needs SG_DASHBOARD_TOKEN (at least 16 bytes), or it
// exits 2 before touching Redis. With a token every request must carry it:
// the login form starts a session of --session-ttl (default 12h), kept in
// the dashboard's memory, whose cookie is HttpOnly, SameSite=Strict,
// expires with it and is Secure when --public-url is https or the request
// is TLS; Log out ends the session, so a copy of the cookie is refused;
// scripts send "Authorization: Bearer <token>"; others get 401. Every POST
// of a browser must carry the CSRF token of a page (made at start, or the
// session's): a plain curl -X POST gets 403 and sends nothing. POSTs pass
// a same-origin check (Sec-Fetch-Site, Origin) too, and every page carries
// a Content-Security-Policy without 'unsafe-inline'. Connections have read,
// write and idle timeouts and the live streams a cap (64), as package
// dashboard says. --read-only hides the actions; a Redis user that may not
// send ops (found without sending one: see package controlops,
// Client.CheckPermission) sees them disabled, each page saying why and
// which role to use. It speaks plain HTTP: across a network, put a TLS
// proxy in front and give its URL as --public-url (its host, when not
// loopback, needs SG_DASHBOARD_TOKEN).
//
// # Data read from Redis
//
// Whoever can write to the fleet's Redis can write the registry and the
// streams, so sgctl prints nothing it read there as is. In text output every
// value is escaped: every rune outside Unicode's graphic categories
// (control characters and escape sequences, C1 controls, bidi overrides and
// isolates, zero-width and other format characters) and invalid UTF-8 appear
// as Go escapes (\x1b, \u009b, \u202e, \xff), and a backslash as \\;
// quotes are left as they are. Table cells and watch columns show at most
// 128 characters of a value and end a longer one with "…"; --json keeps
// whole values, valid JSON with the same runes as \u escapes (DEL, C1
// controls, bidi overrides and the other format characters included). The
// dashboard shows values by the same rule (package visible).
//
// Names come from keys (see package registry): ps, the op commands' plan
// and the dashboard skip an entry whose JSON names another service or
// instance than its key, or none, and an index member that cannot be an
// instance id, with a warning naming the key; watch skips an event whose
// service or instance cannot be a name, with a warning at most once a
// minute. ps also skips a member of sg:registry:services that is not
// a service name, a service whose keys Redis refuses (an index of the wrong
// type), and an entry that is not JSON or not a string, with one warning line
// on stderr each ("sgctl ps: warning: ..."), lists the rest and exits 0. A
// sg:registry:services key of the wrong type fails ps (exit 1, naming the
// key): nothing else could be listed.
//
// # Environment
//
//	REDIS_URL       redis://, rediss:// or unix:// URL of the registry's Redis, with
//	                auth; addr= query parameters name the nodes of a cluster; with
//	                master_name=NAME the host and addr= name Sentinels, which say
//	                where master NAME is. Default redis://127.0.0.1:6379/0, as
//	                redis-cli. Its user: the sg-reader role of docs/redis-acl.md
//	                for ps, watch and the read-only dashboard, sg-operator for the
//	                op commands and the dashboard's actions; an op command as a
//	                user that may not send exits 1 naming the refused XADD and
//	                the sg-operator role.
//	SG_CONTROL_KEY  HMAC-SHA256 key that signs the ops (at least 16 bytes;
//	                fewer than 128 bits, controlops.KeyBits, warns),
//	                the same variable the services have: of a comma-separated list
//	                the first key signs. Unset: ops are sent unsigned, and only
//	                instances with SG_CONTROL_INSECURE=true accept them. Results
//	                name the key that verified the op by its id (the first 8 hex
//	                digits of its SHA-256). Only the op commands and dashboard read it.
//	SG_SERVICE_TTL  the fleet's registry TTL (at least 3s), which ps and dashboard
//	                use to date heartbeats.
//	SG_DASHBOARD_TOKEN  the token every dashboard request must carry (at least 16
//	                bytes); required when dashboard --listen is not loopback.
//
// Variables are validated as the services validate them (package fleetenv,
// and controlops.ParseKeys); a bad value is named with the variable in the
// error (passwords redacted).
//
// # Traces
//
// The op commands start the op's trace themselves: a W3C traceparent with a
// random trace id and span id, sampled, sent with the op. sgctl exports no
// span (it links no OpenTelemetry exporter and reads no OTEL_* variable);
// each instance's handling of the op (controlops.handle, and under it a
// restart's lifecycle.shutdown) is a child of that span id, so the
// instances' spans form one trace. The trace id is printed with the op
// ("trace ..."; trace_id with --json): look it up in Jaeger.
//
// # Exit codes
//
//	0  success (watch: also when ended by Ctrl-C)
//	1  an op failed or was rejected, --wait timed out or was interrupted
//	   (Ctrl-C), no live instance to send to, or another runtime error (e.g.
//	   graphviz missing for --format svg)
//	2  usage or configuration error: unknown command or flag, bad flag value or
//	   argument, invalid environment variable; printed with what is wrong
//	3  Redis unreachable: the message names the address and REDIS_URL
package main
