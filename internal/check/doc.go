// Package check runs a concurrent workload against any cluster that speaks the etcd v3 API
// (Ordo or etcd) and checks what it saw: the history of every operation is checked for
// linearizability with porcupine against a model of the KV and lease semantics, every
// acknowledged write must be present in the cluster's own change log at the revision it
// was acknowledged with, and every watcher must have seen exactly that log from its start
// revision on, in revision order, with no gap, duplicate or step back.
//
// The workload writes only under a key prefix of its own (a fresh one per run), so it can
// run against a cluster that serves other clients; Config.Exclusive adds the checks that
// only hold when nobody else writes (revisions contiguous).
//
// Run is what `ordo check` and the fault-injection tests call; the faults themselves
// (kills, partitions, pauses) are injected by the caller while Run is going on.
package check
