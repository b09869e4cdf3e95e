// Package difftest runs randomized sequences of KV, Txn, Watch and Lease requests against a
// single-member Ordo and a single-member etcd v3.7 in lockstep and compares every response
// field by field (TestDifferential, TestDifferentialSmoke), and a fixed list of JSON gateway
// requests to both (TestGatewayDifferential).
//
// It is a Go module of its own so that Ordo's build never depends on etcd's server: the test
// starts both servers as processes, built from ../../cmd/ordo and ../etcd unless ORDO_BIN and
// ETCD_BIN name ready binaries. DIFF_SEED replays a run (every run logs its seed), DIFF_OPS sets
// the number of operations and DIFF_MAX_DIFFS how many differences are reported before the run
// stops. scripts/difftest.sh builds both binaries and runs the test.
//
// The differences the test tolerates on purpose (auto-assigned lease ids, remaining lease TTLs,
// the order etcd lists lease keys in) are described in docs/differences.md.
package difftest
