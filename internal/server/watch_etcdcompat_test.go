package server_test

import (
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// newSingle starts a 1-member cluster of the test's own and waits for its leader.
func newSingle(t *testing.T) *testcluster.Cluster {
	t.Helper()
	c := testcluster.New(t, 1, testcluster.Options{})
	if _, err := c.Leader(30 * time.Second); err != nil {
		t.Fatalf("leader: %v", err)
	}
	return c
}

// TestWatchEmptyRange checks that a watch whose range end is set and not above its key is
// refused as etcd refuses it: a created and canceled response with watch id -1 and
// "mvcc: watcher range is empty", before an automatic id is taken and before a client-chosen
// id is checked for duplicates. A from-key watch (range end "\x00") and an empty key (which
// stands for "\x00") are valid.
func TestWatchEmptyRange(t *testing.T) {
	checkNoWatchLeaks(t)
	c := newSingle(t)
	cli := c.Members[0].Client()
	k := keyer(t)
	s := rawWatchStream(t, cli, callTimeout)

	refused := func(what string, cr *pb.WatchCreateRequest) {
		t.Helper()
		rawCreate(t, s, cr)
		resp := rawRecv(t, s, what)
		if !resp.Created || !resp.Canceled || resp.WatchId != clientv3.InvalidWatchID ||
			resp.CancelReason != "mvcc: watcher range is empty" || len(resp.Events) != 0 || resp.CompactRevision != 0 {
			t.Fatalf("%s: got %v, want created+canceled, watch id -1, %q", what, resp, "mvcc: watcher range is empty")
		}
		checkHeader(t, resp.Header)
	}
	refused("end below key", &pb.WatchCreateRequest{Key: []byte(k("b")), RangeEnd: []byte(k("a"))})
	refused("end equal to key", &pb.WatchCreateRequest{Key: []byte(k("b")), RangeEnd: []byte(k("b"))})
	refused("end \\x00\\x00 below key \\x00\\x01", &pb.WatchCreateRequest{Key: []byte{0, 1}, RangeEnd: []byte{0, 0}})

	// The refused watches took no automatic id.
	if id := rawCreated(t, s, &pb.WatchCreateRequest{Key: []byte(k("b")), RangeEnd: []byte{0}}); id != 0 {
		t.Fatalf("from-key watch: id %d, want 0", id)
	}
	if id := rawCreated(t, s, &pb.WatchCreateRequest{RangeEnd: []byte{0}}); id != 1 {
		t.Fatalf("watch of every key: id %d, want 1", id)
	}
	if id := rawCreated(t, s, &pb.WatchCreateRequest{RangeEnd: []byte{1}}); id != 2 {
		t.Fatalf("empty key (\\x00) to \\x01: id %d, want 2", id)
	}
	// An empty range with an id in use: the range is checked first.
	refused("empty range with a used id", &pb.WatchCreateRequest{Key: []byte(k("b")), RangeEnd: []byte(k("a")), WatchId: 1})
}

// TestWatchPrevKVWithinTxn checks the prev_kv of the events of a txn that changes a key twice
// (a put and a from-key delete, which the duplicate-key check lets through): as in etcd, each
// event carries the key as it was before the txn, none if the txn created it.
func TestWatchPrevKVWithinTxn(t *testing.T) {
	checkNoWatchLeaks(t)
	c := newSingle(t)
	cli := c.Members[0].Client()
	k := keyer(t)
	wch := cli.Watch(watchCtx(t, callTimeout), k(""), clientv3.WithPrefix(), clientv3.WithPrevKV())
	a1 := mustPut(t, cli, k("a"), "a1").Header.Revision
	tr, err := cli.Txn(ctx(t)).Then(
		clientv3.OpPut(k("a"), "a2", clientv3.WithPrevKV()),
		clientv3.OpPut(k("b"), "b1"),
		clientv3.OpDelete(k("a"), clientv3.WithFromKey(), clientv3.WithPrevKV()),
	).Commit()
	if err != nil {
		t.Fatalf("txn: %v", err)
	}
	rev := tr.Header.Revision
	// The responses see the txn's own changes.
	if p := tr.Responses[0].GetResponsePut().PrevKv; p == nil || string(p.Value) != "a1" {
		t.Fatalf("put response prev_kv %v, want a1", p)
	}
	if d := tr.Responses[2].GetResponseDeleteRange(); d.Deleted != 2 || string(d.PrevKvs[0].Value) != "a2" || string(d.PrevKvs[1].Value) != "b1" {
		t.Fatalf("delete response %v, want a2 and b1 deleted", d)
	}

	// The model applies the txn's changes in order, as the responses see them; the events of
	// the delete carry the keys before the txn instead.
	m := newKVModel()
	putA1 := m.put(k("a"), "a1", a1)
	putA2, putB1 := m.put(k("a"), "a2", rev), m.put(k("b"), "b1", rev)
	want := []wantEv{putA1, putA2, putB1, m.del(k("a"), rev), m.del(k("b"), rev)}
	want[3].prev, want[4].prev = putA1.kv, nil
	evs, _ := recvEvents(t, wch, len(want), "events")
	checkEvents(t, "live watch", evs, want, true)

	// Replayed from the history, the events are the same.
	hist := cli.Watch(watchCtx(t, callTimeout), k(""), clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(a1))
	evs, _ = recvEvents(t, hist, len(want), "replayed events")
	checkEvents(t, "replay", evs, want, true)
	for _, ev := range evs[1:] {
		if ev.Kv.ModRevision != rev {
			t.Fatalf("event %v not at the txn's revision %d", ev, rev)
		}
	}
}

// TestCompactAtZero checks etcd's bounds of Compact: a cluster that was never compacted
// accepts a compaction at revision 0 (its compact revision starts at -1) and answers with the
// current revision; afterwards 0 is refused as compacted. A negative revision in a txn range
// is refused as compacted once it is below the compact revision: -2 always, -1 only after
// the compaction at 0.
func TestCompactAtZero(t *testing.T) {
	c := newSingle(t)
	cli := c.Members[0].Client()
	k := keyer(t)
	cur := mustPut(t, cli, k("a"), "1").Header.Revision
	txnRange := func(rev int64) error {
		_, err := cli.Txn(ctx(t)).Then(clientv3.OpGet(k("a"), clientv3.WithRev(rev))).Commit()
		return err
	}
	if err := txnRange(-1); err != nil {
		t.Fatalf("txn range at -1 before any compaction: %v", err)
	}
	wantErr(t, "txn range at -2 before any compaction", txnRange(-2), rpctypes.ErrCompacted)

	resp, err := cli.Compact(ctx(t), 0)
	if err != nil {
		t.Fatalf("first compaction at 0: %v", err)
	}
	checkHeader(t, resp.Header)
	if resp.Header.Revision != cur {
		t.Fatalf("compaction at 0: header revision %d, want %d", resp.Header.Revision, cur)
	}
	_, err = cli.Compact(ctx(t), 0, clientv3.WithCompactPhysical())
	wantErr(t, "second compaction at 0", err, rpctypes.ErrCompacted)
	wantErr(t, "txn range at -1 after the compaction at 0", txnRange(-1), rpctypes.ErrCompacted)
	// Everything is still readable, and the next compaction may be at 1 or above.
	if r, err := cli.Get(ctx(t), k("a"), clientv3.WithRev(cur)); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("get at %d after compaction at 0: %v %v", cur, r, err)
	}
	if _, err := cli.Compact(ctx(t), 1, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compaction at 1 after compaction at 0: %v", err)
	}
}
