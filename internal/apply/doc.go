// Package apply is Ordo's state machine: one explicit function applies each committed raft entry
// to the MVCC store and the membership, in one Pebble batch per group of entries that also
// records the applied index, and hands each proposer its result.
//
// It also holds the request semantics shared by the write and the read path: Range with etcd's
// sort, filter and limit rules, Txn compare evaluation, and the checks a Txn must pass before any
// of its operations runs.
package apply
