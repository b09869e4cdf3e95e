package server_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestKV checks Ordo's KV service against etcd v3.7 semantics through etcd's own clientv3,
// on a 1-member and a 3-member cluster. Each size starts one cluster that every group below
// shares; the groups run in order and use their own key prefixes. Compaction runs last
// because it removes history the other groups could otherwise still read.
func TestKV(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		// Every member and client was stopped by the sub-tests' cleanups by now.
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines leaked after the clusters stopped: %v", err)
		}
	})
	forEachClusterSize(t, func(t *testing.T, c *testcluster.Cluster) {
		t.Run("Put", func(t *testing.T) { testPut(t, c) })
		t.Run("Range", func(t *testing.T) { testRange(t, c) })
		t.Run("Delete", func(t *testing.T) { testDelete(t, c) })
		t.Run("Txn", func(t *testing.T) { testTxn(t, c) })
		t.Run("RequestTooLarge", func(t *testing.T) { testRequestTooLarge(t, c) })
		t.Run("RangeStream", func(t *testing.T) { testRangeStream(t, c) })
		t.Run("Garbage", func(t *testing.T) { testGarbage(t, c) })
		t.Run("MultiMember", func(t *testing.T) { testMultiMember(t, c) })
		t.Run("Compact", func(t *testing.T) { testCompact(t, c) })
	})
}
