// Package storage owns Ordo's single Pebble database: it opens the engine, defines how the
// keyspace is divided between the subsystems, and implements raft.Storage over the raft log
// kept in the same database.
//
// Keyspace (first byte of every key):
//
//	0x01 raft   raft log entries, hard state, conf state, snapshot metadata (this package)
//	0x02 meta   applied index, cluster and member identity, membership (this package)
//	0x03 mvcc   key versions, revision history and MVCC metadata (package mvcc)
//	0x04 lease  leases (package lease, later)
//
// Everything outside the raft prefix is state-machine state: it is what a raft snapshot carries
// to a follower, and the applied index in the meta prefix always names the last raft entry whose
// effects it contains, because both are written in the same batch.
package storage
