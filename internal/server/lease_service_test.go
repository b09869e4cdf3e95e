package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// The harness runs members with --election-timeout 500 --heartbeat-interval 50: etcd's minimum
// lease TTL is then ceil(1.5 * 500ms) = 1s.
const leaseMinTTL = 1

// leaseMaxTTL is etcd's largest TTL (seconds).
const leaseMaxTTL = 9000000000

// leaseExpiryBound bounds how long after its deadline an abandoned lease may still hold its
// keys: the leader checks expiry every 250ms and revokes through raft.
const leaseExpiryBound = 3 * time.Second

func TestLease(t *testing.T) {
	forEachClusterSize(t, testLease)
}

func testLease(t *testing.T, c *testcluster.Cluster) {
	cli := c.Client()

	t.Run("GrantServerChosenID", func(t *testing.T) {
		g, err := cli.Grant(ctx(t), 5)
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		checkHeader(t, g.ResponseHeader)
		if g.ID == 0 || g.ID < 0 {
			t.Fatalf("grant: server-chosen id %d, want a positive id", g.ID)
		}
		if g.TTL != 5 {
			t.Fatalf("grant: TTL %d, want 5", g.TTL)
		}
		ttl := leaseTTL(t, cli, int64(g.ID), false)
		if ttl.GrantedTTL != 5 || ttl.TTL < 4 || ttl.TTL > 5 {
			t.Fatalf("time-to-live right after grant: granted %d remaining %d, want granted 5 remaining 4..5", ttl.GrantedTTL, ttl.TTL)
		}
		// Two grants get two ids.
		g2, err := cli.Grant(ctx(t), 5)
		if err != nil {
			t.Fatalf("second grant: %v", err)
		}
		if g2.ID == g.ID {
			t.Fatalf("two grants got the same id %x", g.ID)
		}
	})

	t.Run("GrantClientChosenID", func(t *testing.T) {
		raw := pb.NewLeaseClient(cli.ActiveConnection())
		const id = 0x1234abcd
		g, err := raw.LeaseGrant(ctx(t), &pb.LeaseGrantRequest{ID: id, TTL: 7})
		if err != nil {
			t.Fatalf("grant id %x: %v", id, err)
		}
		checkHeader(t, g.Header)
		if g.ID != id || g.TTL != 7 {
			t.Fatalf("grant id %x TTL 7: got id %x TTL %d", id, g.ID, g.TTL)
		}
		ttl := leaseTTL(t, cli, id, false)
		if ttl.GrantedTTL != 7 {
			t.Fatalf("time-to-live of client-chosen id: granted %d, want 7", ttl.GrantedTTL)
		}
		// Granting the same id again fails, whatever the TTL, and leaves the lease as it was.
		_, err = raw.LeaseGrant(ctx(t), &pb.LeaseGrantRequest{ID: id, TTL: 30})
		wantErr(t, "grant of an existing id", err, rpctypes.ErrLeaseExist)
		if ttl := leaseTTL(t, cli, id, false); ttl.GrantedTTL != 7 {
			t.Fatalf("after the duplicate grant: granted TTL %d, want 7", ttl.GrantedTTL)
		}
		// Through every member.
		for i, m := range c.Members {
			_, err := pb.NewLeaseClient(m.Client().ActiveConnection()).LeaseGrant(ctx(t), &pb.LeaseGrantRequest{ID: id, TTL: 7})
			wantErr(t, fmt.Sprintf("duplicate grant through member %d", i), err, rpctypes.ErrLeaseExist)
		}
	})

	t.Run("GrantTTLLimits", func(t *testing.T) {
		_, err := cli.Grant(ctx(t), leaseMaxTTL+1)
		wantErr(t, "grant TTL above the maximum", err, rpctypes.ErrLeaseTTLTooLarge)
		// The maximum itself is allowed.
		g, err := cli.Grant(ctx(t), leaseMaxTTL)
		if err != nil {
			t.Fatalf("grant with the maximum TTL: %v", err)
		}
		if g.TTL != leaseMaxTTL {
			t.Fatalf("grant with the maximum TTL: TTL %d", g.TTL)
		}
		if ttl := leaseTTL(t, cli, int64(g.ID), false); ttl.GrantedTTL != leaseMaxTTL || ttl.TTL < leaseMaxTTL-1 {
			t.Fatalf("time-to-live of the maximum TTL lease: granted %d remaining %d", ttl.GrantedTTL, ttl.TTL)
		}
		if _, err := cli.Revoke(ctx(t), g.ID); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		// TTLs below the minimum (including 0 and negative ones) are raised to it.
		for _, ttl := range []int64{0, -3, leaseMinTTL} {
			g, err := cli.Grant(ctx(t), ttl)
			if err != nil {
				t.Fatalf("grant TTL %d: %v", ttl, err)
			}
			if g.TTL != leaseMinTTL {
				t.Fatalf("grant TTL %d: granted TTL %d, want the minimum %d", ttl, g.TTL, leaseMinTTL)
			}
			if got := leaseTTL(t, cli, int64(g.ID), false); got.GrantedTTL != leaseMinTTL {
				t.Fatalf("grant TTL %d: time-to-live reports granted TTL %d, want %d", ttl, got.GrantedTTL, leaseMinTTL)
			}
		}
	})

	t.Run("PutWithLease", func(t *testing.T) {
		k := keyer(t)
		g := mustGrant(t, cli, 30)
		p := mustPut(t, cli, k("a"), "1", clientv3.WithLease(g.ID))
		kv := getOne(t, cli, k("a"))
		if kv.Lease != int64(g.ID) || kv.ModRevision != p.Header.Revision {
			t.Fatalf("put with lease %x: got lease %x mod %d (put at %d)", g.ID, kv.Lease, kv.ModRevision, p.Header.Revision)
		}
		// Every member sees the attachment.
		for i, m := range c.Members {
			if kv := getOne(t, m.Client(), k("a")); kv.Lease != int64(g.ID) {
				t.Fatalf("member %d: lease %x, want %x", i, kv.Lease, g.ID)
			}
		}
		// An unknown lease is refused and writes nothing.
		rev := currentRev(t, cli)
		_, err := cli.Put(ctx(t), k("b"), "1", clientv3.WithLease(0x7eadbeef))
		wantErr(t, "put with an unknown lease", err, rpctypes.ErrLeaseNotFound)
		if g := mustGet(t, cli, k("b")); len(g.Kvs) != 0 {
			t.Fatalf("put with an unknown lease wrote %v", keysOf(g.Kvs))
		}
		if got := currentRev(t, cli); got != rev {
			t.Fatalf("put with an unknown lease moved the revision from %d to %d", rev, got)
		}
	})

	t.Run("TimeToLiveKeys", func(t *testing.T) {
		k := keyer(t)
		l1, l2 := mustGrant(t, cli, 30), mustGrant(t, cli, 30)
		for _, key := range []string{"a", "b", "c", "d"} {
			mustPut(t, cli, k(key), "v", clientv3.WithLease(l1.ID))
		}
		wantLeaseKeys(t, "after attaching four keys", c, l1.ID, k("a"), k("b"), k("c"), k("d"))
		wantLeaseKeys(t, "second lease before any put", c, l2.ID)

		// Re-putting with another lease moves the key.
		mustPut(t, cli, k("b"), "v2", clientv3.WithLease(l2.ID))
		wantLeaseKeys(t, "first lease after moving b", c, l1.ID, k("a"), k("c"), k("d"))
		wantLeaseKeys(t, "second lease after moving b", c, l2.ID, k("b"))
		if kv := getOne(t, cli, k("b")); kv.Lease != int64(l2.ID) {
			t.Fatalf("b: lease %x, want %x", kv.Lease, l2.ID)
		}
		// Re-putting without a lease detaches it.
		mustPut(t, cli, k("c"), "v2")
		wantLeaseKeys(t, "first lease after re-putting c without a lease", c, l1.ID, k("a"), k("d"))
		if kv := getOne(t, cli, k("c")); kv.Lease != 0 {
			t.Fatalf("c: lease %x after a put without lease", kv.Lease)
		}
		// Re-putting with the same lease keeps it once.
		mustPut(t, cli, k("a"), "v2", clientv3.WithLease(l1.ID))
		wantLeaseKeys(t, "first lease after re-putting a with it", c, l1.ID, k("a"), k("d"))
		// Deleting a key detaches it; so does a range delete.
		mustDelete(t, cli, k("a"))
		wantLeaseKeys(t, "first lease after deleting a", c, l1.ID, k("d"))
		mustDelete(t, cli, k(""), clientv3.WithPrefix())
		wantLeaseKeys(t, "first lease after deleting the prefix", c, l1.ID)
		wantLeaseKeys(t, "second lease after deleting the prefix", c, l2.ID)
		// A key deleted and put again without lease stays detached, and revoking the lease
		// leaves it alone.
		mustPut(t, cli, k("d"), "plain")
		r, err := cli.Revoke(ctx(t), l1.ID)
		if err != nil {
			t.Fatalf("revoke: %v", err)
		}
		if kv := getOne(t, cli, k("d")); string(kv.Value) != "plain" {
			t.Fatalf("revoking a lease whose key was detached changed it: %v", kv)
		}
		// A revoke with no attached key changes nothing: etcd reports the current revision.
		if got := currentRev(t, cli); got != r.Header.Revision {
			t.Fatalf("revoke of a lease with no keys: header revision %d, current revision %d", r.Header.Revision, got)
		}
	})

	t.Run("TimeToLiveUnknown", func(t *testing.T) {
		for i, m := range c.Members {
			r, err := m.Client().TimeToLive(ctx(t), 0x5eadbeef, clientv3.WithAttachedKeys())
			if err != nil {
				t.Fatalf("member %d: time-to-live of an unknown lease: %v", i, err)
			}
			checkHeader(t, r.ResponseHeader)
			if r.TTL != -1 || r.GrantedTTL != 0 || len(r.Keys) != 0 || r.ID != 0x5eadbeef {
				t.Fatalf("member %d: time-to-live of an unknown lease: id %x TTL %d granted %d keys %q, want TTL -1 granted 0", i, r.ID, r.TTL, r.GrantedTTL, r.Keys)
			}
		}
	})

	t.Run("Leases", func(t *testing.T) {
		var ids []clientv3.LeaseID
		for i := 0; i < 3; i++ {
			ids = append(ids, mustGrant(t, cli, 30).ID)
		}
		for i, m := range c.Members {
			got := leaseIDs(t, m.Client())
			for _, id := range ids {
				if !slices.Contains(got, id) {
					t.Fatalf("member %d: leases %x lack %x", i, got, id)
				}
			}
		}
		if _, err := cli.Revoke(ctx(t), ids[1]); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		for i, m := range c.Members {
			got := leaseIDs(t, m.Client())
			if slices.Contains(got, ids[1]) || !slices.Contains(got, ids[0]) || !slices.Contains(got, ids[2]) {
				t.Fatalf("member %d after revoking %x: leases %x", i, ids[1], got)
			}
		}
	})

	t.Run("RevokeOneRevision", func(t *testing.T) {
		k := keyer(t)
		g := mustGrant(t, cli, 30)
		var want []string
		for i := 0; i < 5; i++ {
			key := k(fmt.Sprintf("k%d", i))
			mustPut(t, cli, key, "v", clientv3.WithLease(g.ID))
			want = append(want, key)
		}
		last := mustPut(t, cli, k("plain"), "no lease")
		wctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
		defer cancel()
		// Watch through another member than the one the revoke goes to, when there is one.
		wcli := c.Members[len(c.Members)-1].Client()
		wch := wcli.Watch(wctx, k(""), clientv3.WithPrefix(), clientv3.WithRev(last.Header.Revision+1))

		r, err := c.Members[0].Client().Revoke(ctx(t), g.ID)
		if err != nil {
			t.Fatalf("revoke: %v", err)
		}
		checkHeader(t, r.Header)
		if r.Header.Revision != last.Header.Revision+1 {
			t.Fatalf("revoke header revision %d, want %d (one revision for all its deletes)", r.Header.Revision, last.Header.Revision+1)
		}
		resp := recvResp(t, wch, "watch after revoke")
		if err := resp.Err(); err != nil {
			t.Fatalf("watch: %v", err)
		}
		var got []string
		for _, ev := range resp.Events {
			if ev.Type != mvccpb.DELETE || ev.Kv.ModRevision != r.Header.Revision {
				t.Fatalf("revoke produced event %v %q at %d, want deletes at %d; all: %s", ev.Type, ev.Kv.Key, ev.Kv.ModRevision, r.Header.Revision, eventsString(resp.Events))
			}
			got = append(got, string(ev.Kv.Key))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("the first watch response after revoke holds deletes of %q, want all of %q in one response", got, want)
		}
		// Nothing else comes before the next write.
		marker := mustPut(t, cli, k("marker"), "m")
		next := recvResp(t, wch, "watch after the marker put")
		if len(next.Events) != 1 || string(next.Events[0].Kv.Key) != k("marker") || next.Events[0].Kv.ModRevision != marker.Header.Revision {
			t.Fatalf("after the revoke's deletes, the next watch response is %s, want only the marker put at %d", eventsString(next.Events), marker.Header.Revision)
		}
		g2 := mustGet(t, cli, k(""), clientv3.WithPrefix())
		wantKeys(t, "after revoke", g2.Kvs, k("marker"), k("plain"))
		// Revoking again fails; the lease is gone everywhere.
		_, err = cli.Revoke(ctx(t), g.ID)
		wantErr(t, "second revoke", err, rpctypes.ErrLeaseNotFound)
		_, err = cli.Revoke(ctx(t), 0x6eadbeef)
		wantErr(t, "revoke of an unknown lease", err, rpctypes.ErrLeaseNotFound)
		for i, m := range c.Members {
			if ttl := leaseTTL(t, m.Client(), int64(g.ID), true); ttl.TTL != -1 || len(ttl.Keys) != 0 {
				t.Fatalf("member %d: time-to-live of the revoked lease: TTL %d keys %q", i, ttl.TTL, ttl.Keys)
			}
		}
		// The lease can no longer take keys.
		_, err = cli.Put(ctx(t), k("late"), "v", clientv3.WithLease(g.ID))
		wantErr(t, "put with the revoked lease", err, rpctypes.ErrLeaseNotFound)
	})

	t.Run("RevokeStopsKeepAlive", func(t *testing.T) {
		t.Parallel()
		k := keyer(t)
		g := mustGrant(t, cli, 5)
		mustPut(t, cli, k("a"), "v", clientv3.WithLease(g.ID))
		kctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		ka, err := cli.KeepAlive(kctx, g.ID)
		if err != nil {
			t.Fatalf("keep-alive: %v", err)
		}
		recvKeepAlive(t, ka, g.ID, 5)
		if _, err := cli.Revoke(ctx(t), g.ID); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		// clientv3 closes the channel once a keep-alive answers that the lease is gone.
		for {
			select {
			case r, ok := <-ka:
				if !ok {
					if g := mustGet(t, cli, k("a")); len(g.Kvs) != 0 {
						t.Fatalf("key of the revoked lease still present")
					}
					return
				}
				if r.TTL <= 0 {
					t.Fatalf("keep-alive response with TTL %d reached the channel", r.TTL)
				}
			case <-kctx.Done():
				t.Fatalf("keep-alive channel still open after the lease was revoked")
			}
		}
	})

	t.Run("TxnPutWithLease", func(t *testing.T) {
		k := keyer(t)
		g := mustGrant(t, cli, 30)
		tx := mustTxn(t, cli, []clientv3.Cmp{clientv3.Compare(clientv3.Version(k("a")), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(k("a"), "1", clientv3.WithLease(g.ID)), clientv3.OpPut(k("b"), "2", clientv3.WithLease(g.ID)), clientv3.OpPut(k("c"), "3")}, nil)
		if !tx.Succeeded {
			t.Fatalf("txn did not succeed")
		}
		for _, key := range []string{"a", "b"} {
			if kv := getOne(t, cli, k(key)); kv.Lease != int64(g.ID) || kv.ModRevision != tx.Header.Revision {
				t.Fatalf("%s: lease %x mod %d, want lease %x mod %d", key, kv.Lease, kv.ModRevision, g.ID, tx.Header.Revision)
			}
		}
		wantLeaseKeys(t, "after the txn", c, g.ID, k("a"), k("b"))
		// The else branch attaches too.
		tx2 := mustTxn(t, cli, []clientv3.Cmp{clientv3.Compare(clientv3.Version(k("a")), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(k("x"), "never")}, []clientv3.Op{clientv3.OpPut(k("d"), "4", clientv3.WithLease(g.ID))})
		if tx2.Succeeded {
			t.Fatalf("second txn took the then branch")
		}
		wantLeaseKeys(t, "after the else branch", c, g.ID, k("a"), k("b"), k("d"))
		// An unknown lease in the taken branch fails the whole txn, which writes nothing.
		rev := currentRev(t, cli)
		_, err := cli.Txn(ctx(t)).Then(clientv3.OpPut(k("e"), "5"), clientv3.OpPut(k("f"), "6", clientv3.WithLease(0x4eadbeef))).Commit()
		wantErr(t, "txn put with an unknown lease", err, rpctypes.ErrLeaseNotFound)
		if got := currentRev(t, cli); got != rev {
			t.Fatalf("failed txn moved the revision from %d to %d", rev, got)
		}
		if g := mustGet(t, cli, k("e")); len(g.Kvs) != 0 {
			t.Fatalf("failed txn wrote e")
		}
		// A nested txn's put with a lease attaches as well.
		mustTxn(t, cli, nil, []clientv3.Op{clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut(k("n"), "nested", clientv3.WithLease(g.ID))}, nil)}, nil)
		wantLeaseKeys(t, "after a nested txn", c, g.ID, k("a"), k("b"), k("d"), k("n"))
		// Revoking deletes exactly the attached keys.
		if _, err := cli.Revoke(ctx(t), g.ID); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		wantKeys(t, "after revoke", mustGet(t, cli, k(""), clientv3.WithPrefix()).Kvs, k("c"))
	})

	t.Run("IgnoreLease", func(t *testing.T) {
		k := keyer(t)
		g := mustGrant(t, cli, 30)
		mustPut(t, cli, k("a"), "1", clientv3.WithLease(g.ID))
		p := mustPut(t, cli, k("a"), "2", clientv3.WithIgnoreLease())
		kv := getOne(t, cli, k("a"))
		if string(kv.Value) != "2" || kv.Lease != int64(g.ID) || kv.ModRevision != p.Header.Revision || kv.Version != 2 {
			t.Fatalf("after an ignore_lease put: value %q lease %x mod %d version %d, want value 2 lease %x mod %d version 2", kv.Value, kv.Lease, kv.ModRevision, kv.Version, g.ID, p.Header.Revision)
		}
		wantLeaseKeys(t, "after an ignore_lease put", c, g.ID, k("a"))
		// ignore_lease together with ignore_value (a pure touch).
		mustPut(t, cli, k("a"), "", clientv3.WithIgnoreLease(), clientv3.WithIgnoreValue())
		if kv := getOne(t, cli, k("a")); string(kv.Value) != "2" || kv.Lease != int64(g.ID) {
			t.Fatalf("after an ignore_lease+ignore_value put: value %q lease %x", kv.Value, kv.Lease)
		}
		// Inside a txn too.
		mustTxn(t, cli, nil, []clientv3.Op{clientv3.OpPut(k("a"), "3", clientv3.WithIgnoreLease())}, nil)
		if kv := getOne(t, cli, k("a")); string(kv.Value) != "3" || kv.Lease != int64(g.ID) {
			t.Fatalf("after a txn ignore_lease put: value %q lease %x", kv.Value, kv.Lease)
		}
		wantLeaseKeys(t, "after a txn ignore_lease put", c, g.ID, k("a"))
		// ignore_lease on a missing key fails; with a lease given too it is refused.
		_, err := cli.Put(ctx(t), k("missing"), "v", clientv3.WithIgnoreLease())
		wantErr(t, "ignore_lease put of a missing key", err, rpctypes.ErrKeyNotFound)
		_, err = rawKV(cli).Put(ctx(t), &pb.PutRequest{Key: []byte(k("a")), Value: []byte("x"), Lease: int64(g.ID), IgnoreLease: true})
		wantErr(t, "ignore_lease put with a lease", err, rpctypes.ErrLeaseProvided)
		// A key kept with ignore_lease goes with its lease.
		if _, err := cli.Revoke(ctx(t), g.ID); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		if g := mustGet(t, cli, k("a")); len(g.Kvs) != 0 {
			t.Fatalf("key kept with ignore_lease survived its lease's revoke")
		}
		// ignore_lease on a key without lease keeps it without lease.
		mustPut(t, cli, k("b"), "1")
		mustPut(t, cli, k("b"), "2", clientv3.WithIgnoreLease())
		if kv := getOne(t, cli, k("b")); kv.Lease != 0 {
			t.Fatalf("ignore_lease put of a key without lease attached it to %x", kv.Lease)
		}
	})

	t.Run("KeepAliveOnce", func(t *testing.T) {
		t.Parallel()
		k := keyer(t)
		waitLeaseClock(t, cli)
		g := mustGrant(t, cli, 3)
		mustPut(t, cli, k("a"), "v", clientv3.WithLease(g.ID))
		// Wait until at most a second or so is left, then renew through every member.
		waitFor(t, 5*time.Second, "remaining TTL drops to 1", func() (bool, error) {
			return leaseTTL(t, cli, int64(g.ID), false).TTL <= 1, nil
		})
		for i, m := range c.Members {
			r, err := m.Client().KeepAliveOnce(ctx(t), g.ID)
			if err != nil {
				t.Fatalf("member %d: keep-alive once: %v", i, err)
			}
			checkHeader(t, r.ResponseHeader)
			if r.ID != g.ID || r.TTL != 3 {
				t.Fatalf("member %d: keep-alive once: id %x TTL %d, want id %x TTL 3", i, r.ID, r.TTL, g.ID)
			}
		}
		if ttl := leaseTTL(t, cli, int64(g.ID), false); ttl.TTL < 2 || ttl.GrantedTTL != 3 {
			t.Fatalf("after keep-alive once: remaining TTL %d granted %d, want remaining 2..3 granted 3", ttl.TTL, ttl.GrantedTTL)
		}
		if kv := getOne(t, cli, k("a")); kv.Lease != int64(g.ID) {
			t.Fatalf("key after keep-alive once: lease %x", kv.Lease)
		}
		_, err := cli.KeepAliveOnce(ctx(t), 0x3eadbeef)
		wantErr(t, "keep-alive once of an unknown lease", err, rpctypes.ErrLeaseNotFound)
		if _, err := cli.Revoke(ctx(t), g.ID); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		_, err = cli.KeepAliveOnce(ctx(t), g.ID)
		wantErr(t, "keep-alive once of a revoked lease", err, rpctypes.ErrLeaseNotFound)
	})

	t.Run("Expiry", func(t *testing.T) {
		t.Parallel()
		k := keyer(t)
		waitLeaseClock(t, cli)
		const ttl = 1
		before := time.Now()
		g := mustGrant(t, cli, ttl)
		granted := time.Now()
		for _, key := range []string{"a", "b", "c"} {
			mustPut(t, cli, k(key), "v", clientv3.WithLease(g.ID))
		}
		mustPut(t, cli, k("plain"), "v")
		obs := watchVanish(t, cli, k("a"), granted.Add(ttl*time.Second), granted.Add(ttl*time.Second+leaseExpiryBound))
		t.Logf("TTL %ds lease: keys present in a read sent %v after the grant response, gone in a read answered %v after it (grant call took %v)",
			ttl, obs.LastPresent.Sub(granted).Round(time.Millisecond), obs.FirstAbsent.Sub(granted).Round(time.Millisecond), granted.Sub(before).Round(time.Millisecond))
		// All keys went at once, on every member; the lease is gone.
		wantKeys(t, "after expiry", mustGet(t, cli, k(""), clientv3.WithPrefix()).Kvs, k("plain"))
		for i, m := range c.Members {
			if r := leaseTTL(t, m.Client(), int64(g.ID), false); r.TTL != -1 {
				t.Fatalf("member %d: expired lease has TTL %d", i, r.TTL)
			}
			if slices.Contains(leaseIDs(t, m.Client()), g.ID) {
				t.Fatalf("member %d: expired lease still listed", i)
			}
		}
		_, err := cli.KeepAliveOnce(ctx(t), g.ID)
		wantErr(t, "keep-alive once of an expired lease", err, rpctypes.ErrLeaseNotFound)
	})

	t.Run("KeepAliveThroughFollower", func(t *testing.T) {
		t.Parallel()
		k := keyer(t)
		lead, err := c.Leader(30 * time.Second)
		if err != nil {
			t.Fatalf("leader: %v", err)
		}
		fcli := c.Members[(lead+1)%len(c.Members)].Client() // the leader itself on one member
		const ttl = 1
		waitLeaseClock(t, fcli)
		g := mustGrant(t, fcli, ttl)
		mustPut(t, fcli, k("a"), "v", clientv3.WithLease(g.ID))
		kctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ka, err := fcli.KeepAlive(kctx, g.ID)
		if err != nil {
			t.Fatalf("keep-alive: %v", err)
		}
		var (
			mu     sync.Mutex
			lastKA time.Time
			nKA    int
		)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for r := range ka {
				mu.Lock()
				if r.ID == g.ID && r.TTL == ttl {
					lastKA = time.Now()
					nKA++
				}
				mu.Unlock()
			}
		}()
		// For 4 s (four TTLs) the key stays.
		start := time.Now()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for time.Since(start) < 4*time.Second {
			if g := mustGet(t, cli, k("a")); len(g.Kvs) != 1 {
				t.Fatalf("key of a kept-alive 1s lease vanished %v after the keep-alive started", time.Since(start).Round(time.Millisecond))
			}
			<-tick.C
		}
		cancel()
		stopped := time.Now()
		<-done
		mu.Lock()
		last, n := lastKA, nKA
		mu.Unlock()
		if n < 4 {
			t.Fatalf("only %d keep-alive responses in 4s for a 1s lease", n)
		}
		obs := watchVanish(t, cli, k("a"), last.Add(ttl*time.Second), stopped.Add(ttl*time.Second+leaseExpiryBound))
		t.Logf("%d keep-alive responses; after stopping, key gone in a read answered %v after the last keep-alive response (%v after stopping)",
			n, obs.FirstAbsent.Sub(last).Round(time.Millisecond), obs.FirstAbsent.Sub(stopped).Round(time.Millisecond))
	})
}

// mustGrant grants a lease with ttl seconds.
func mustGrant(t testing.TB, cli *clientv3.Client, ttl int64) *clientv3.LeaseGrantResponse {
	t.Helper()
	g, err := cli.Grant(ctx(t), ttl)
	if err != nil {
		t.Fatalf("grant TTL %d: %v", ttl, err)
	}
	checkHeader(t, g.ResponseHeader)
	return g
}

// leaseTTL asks for lease id's time-to-live.
func leaseTTL(t testing.TB, cli *clientv3.Client, id int64, keys bool) *clientv3.LeaseTimeToLiveResponse {
	t.Helper()
	var opts []clientv3.LeaseOption
	if keys {
		opts = append(opts, clientv3.WithAttachedKeys())
	}
	r, err := cli.TimeToLive(ctx(t), clientv3.LeaseID(id), opts...)
	if err != nil {
		t.Fatalf("time-to-live of %x: %v", id, err)
	}
	checkHeader(t, r.ResponseHeader)
	return r
}

// wantLeaseKeys checks, through every member, that exactly keys are attached to lease id.
func wantLeaseKeys(t testing.TB, what string, c *testcluster.Cluster, id clientv3.LeaseID, keys ...string) {
	t.Helper()
	want := append([]string{}, keys...)
	slices.Sort(want)
	for i, m := range c.Members {
		r := leaseTTL(t, m.Client(), int64(id), true)
		got := []string{}
		for _, k := range r.Keys {
			got = append(got, string(k))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: member %d: lease %x has keys %q, want %q", what, i, id, got, want)
		}
		if r.TTL <= 0 {
			t.Fatalf("%s: member %d: lease %x TTL %d", what, i, id, r.TTL)
		}
	}
}

// leaseIDs lists the leases.
func leaseIDs(t testing.TB, cli *clientv3.Client) []clientv3.LeaseID {
	t.Helper()
	r, err := cli.Leases(ctx(t))
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	checkHeader(t, r.ResponseHeader)
	var ids []clientv3.LeaseID
	for _, l := range r.Leases {
		ids = append(ids, l.ID)
	}
	return ids
}

// recvKeepAlive waits for one keep-alive response for id with the granted TTL.
func recvKeepAlive(t testing.TB, ka <-chan *clientv3.LeaseKeepAliveResponse, id clientv3.LeaseID, ttl int64) {
	t.Helper()
	timer := time.NewTimer(callTimeout)
	defer timer.Stop()
	select {
	case r, ok := <-ka:
		if !ok {
			t.Fatalf("keep-alive channel closed")
		}
		if r.ID != id || r.TTL != ttl {
			t.Fatalf("keep-alive response id %x TTL %d, want id %x TTL %d", r.ID, r.TTL, id, ttl)
		}
	case <-timer.C:
		t.Fatalf("no keep-alive response after %v", callTimeout)
	}
}

// watchVanish polls key until it is gone (testcluster.PollVanish) and fails the test if it
// went before notBefore or was still there at deadline.
func watchVanish(t testing.TB, cli *clientv3.Client, key string, notBefore, deadline time.Time) testcluster.Vanish {
	t.Helper()
	v := testcluster.PollVanish(cli, key, notBefore, deadline)
	if v.Err != nil {
		t.Fatal(v.Err)
	}
	return v
}

// waitLeaseClock waits until the leader has ticked the lease clock since it was elected (see
// testcluster.WaitLeaseClock).
func waitLeaseClock(t testing.TB, cli *clientv3.Client) {
	t.Helper()
	testcluster.WaitLeaseClock(t, cli)
}
