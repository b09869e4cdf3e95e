// Package auth is Ordo's role-based access control, with etcd v3.7's semantics: users with
// bcrypt passwords (or none, for certificate authentication), roles holding read, write or
// readwrite permissions on keys and key ranges, the root user and role, the enabled flag and
// the auth revision, and the tokens clients authenticate with (simple tokens or JWTs).
//
// The state is replicated: every change is a raft entry, applied by the apply loop through the
// Apply* methods, which write to the entry's Pebble batch (keys under storage.PrefixAuth, so
// raft snapshots carry them) and publish a new immutable in-memory view. Readers (permission
// checks on any gRPC goroutine) load that view without locks.
//
// Permission checks are made where etcd makes them: writes at apply time, on every member, with
// the user name and auth revision the proposing member recorded in the entry's header; reads,
// watches and the admin RPCs on the member that serves them. Check* methods return etcd's gRPC
// errors (rpctypes.ErrGRPC*), so callers hand them to clients unchanged.
//
// Tokens: a simple token ("<16 random letters>.<raft index>") is registered on every member when
// the Authenticate entry is applied and lives in memory for --auth-token-ttl after its last use;
// a JWT carries the user name and the auth revision and is verified by every member with the
// configured key. Any change to users, roles or permissions bumps the auth revision, which
// makes requests carrying an older revision fail with "revision of auth store is old" (clients
// then authenticate again); deleting a user or changing its password also drops its simple
// tokens.
package auth
