// Package cluster holds fault-injection tests that run real Ordo clusters (in-process or as
// separate processes) and talk to them with etcd's clientv3: leader loss under load, SIGKILL
// and restart, snapshot catch-up of a lagging follower, loss of quorum, whole-cluster restarts
// and linearizable reads across members.
//
// The default run stays short; ORDO_LONG_TESTS=1 enables longer variants.
package cluster
