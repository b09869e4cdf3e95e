// Package raftnode drives go.etcd.io/raft/v3 for one member: the Ready loop persists hard state
// and entries (fsync) before sending the messages that depend on them, hands committed entries to
// a single apply goroutine, installs snapshots, takes periodic snapshots with log truncation, and
// serves linearizable reads through batched ReadIndex requests.
//
// Ordering rules:
//   - Save (fsync) happens before Send for the same Ready, except on the leader, which counts
//     itself towards a quorum only once its own Save is done.
//   - Committed entries reach the state machine in log order, from one goroutine.
//   - A snapshot from the leader is installed only after every earlier batch was applied.
package raftnode
