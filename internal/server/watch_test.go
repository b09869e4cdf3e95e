package server_test

import (
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestWatch checks Ordo's Watch service against etcd v3.7 semantics through etcd's own
// clientv3 (and etcd's generated client where clientv3 hides the wire), on a 1-member and a
// 3-member cluster. On 3 members the watches go through a follower and the writes through the
// leader. The groups share one cluster per size and use their own key prefixes; compaction
// runs last because it removes history the others read.
func TestWatch(t *testing.T) {
	checkNoWatchLeaks(t)
	forEachClusterSize(t, func(t *testing.T, c *testcluster.Cluster) {
		t.Run("Basic", func(t *testing.T) { testWatchBasic(t, c) })
		t.Run("History", func(t *testing.T) { testWatchHistory(t, c) })
		t.Run("Cancel", func(t *testing.T) { testWatchCancel(t, c) })
		t.Run("WatchIDs", func(t *testing.T) { testWatchIDs(t, c) })
		t.Run("ManyWatchers", func(t *testing.T) { testWatchMany(t, c) })
		t.Run("RequestProgress", func(t *testing.T) { testWatchRequestProgress(t, c) })
		t.Run("Fragment", func(t *testing.T) { testWatchFragment(t, c) })
		t.Run("Ordering", func(t *testing.T) { testWatchOrdering(t, c) })
		t.Run("Compaction", func(t *testing.T) { testWatchCompaction(t, c) })
	})
}

func testWatchBasic(t *testing.T, c *testcluster.Cluster) {
	wm, lm := watchAndWriteMembers(t, c)
	wcli, kv := wm.Client(), lm.Client()

	t.Run("Key", func(t *testing.T) {
		k, m := keyer(t), newKVModel()
		wch := wcli.Watch(watchCtx(t, callTimeout), k("a"))
		var want []wantEv
		want = append(want, m.put(k("a"), "1", mustPut(t, kv, k("a"), "1").Header.Revision))
		mustPut(t, kv, k("ab"), "x") // a longer key is not the key
		mustPut(t, kv, k("0"), "x")
		want = append(want, m.put(k("a"), "2", mustPut(t, kv, k("a"), "2").Header.Revision))
		want = append(want, m.del(k("a"), mustDelete(t, kv, k("a")).Header.Revision))
		want = append(want, m.put(k("a"), "", mustPut(t, kv, k("a"), "").Header.Revision)) // recreated, empty value
		evs, _ := recvEvents(t, wch, len(want), "watch key")
		checkEvents(t, "watch key", evs, want, false)
	})

	t.Run("Range", func(t *testing.T) {
		k, m := keyer(t), newKVModel()
		wch := wcli.Watch(watchCtx(t, callTimeout), k("b"), clientv3.WithRange(k("d")))
		var want []wantEv
		for _, key := range []string{"a", "b", "bz", "c", "d", "e"} {
			rev := mustPut(t, kv, k(key), key).Header.Revision
			if key >= "b" && key < "d" {
				want = append(want, m.put(k(key), key, rev))
			}
		}
		want = append(want, m.del(k("b"), mustDelete(t, kv, k("b")).Header.Revision))
		mustDelete(t, kv, k("d"))
		want = append(want, m.put(k("c"), "c2", mustPut(t, kv, k("c"), "c2").Header.Revision))
		evs, _ := recvEvents(t, wch, len(want), "watch range")
		checkEvents(t, "watch range", evs, want, false)
	})

	t.Run("Prefix", func(t *testing.T) {
		k, m := keyer(t), newKVModel()
		wch := wcli.Watch(watchCtx(t, callTimeout), k("p/"), clientv3.WithPrefix())
		var want []wantEv
		for _, key := range []string{"p", "p/1", "o", "p/", "p0", "p/2/x", "q"} {
			rev := mustPut(t, kv, k(key), key).Header.Revision
			if strings.HasPrefix(key, "p/") {
				want = append(want, m.put(k(key), key, rev))
			}
		}
		// A range delete over the prefix and beyond: one revision, the prefix's keys only.
		d := mustDelete(t, kv, k("p"), clientv3.WithRange(k("q")))
		if d.Deleted != 5 {
			t.Fatalf("range delete removed %d keys, want 5", d.Deleted)
		}
		for _, key := range []string{"p/", "p/1", "p/2/x"} {
			want = append(want, m.del(k(key), d.Header.Revision))
		}
		evs, resps := recvEvents(t, wch, len(want), "watch prefix")
		checkEvents(t, "watch prefix", evs, want, false)
		if last := resps[len(resps)-1]; len(last.Events) < 3 {
			t.Fatalf("the 3 deletes of one revision came split over responses: last response has %d events", len(last.Events))
		}
	})

	t.Run("FromKey", func(t *testing.T) {
		k, m := keyer(t), newKVModel()
		wch := wcli.Watch(watchCtx(t, callTimeout), k("f/m"), clientv3.WithFromKey())
		var want []wantEv
		for _, key := range []string{"f/a", "f/m", "f/l\xff", "f/z", "g", "f/m0"} {
			rev := mustPut(t, kv, k(key), key).Header.Revision
			if key >= "f/m" {
				want = append(want, m.put(k(key), key, rev))
			}
		}
		// A key far past the prefix is still in a from-key range.
		want = append(want, m.put("\xfe"+prefix(t), "far", mustPut(t, kv, "\xfe"+prefix(t), "far").Header.Revision))
		evs, _ := recvEvents(t, wch, len(want), "watch from key")
		checkEvents(t, "watch from key", evs, want, false)
	})

	t.Run("PrevKV", func(t *testing.T) {
		k, m := keyer(t), newKVModel()
		withPrev := wcli.Watch(watchCtx(t, callTimeout), k("x"), clientv3.WithPrefix(), clientv3.WithPrevKV())
		without := wcli.Watch(watchCtx(t, callTimeout), k("x"), clientv3.WithPrefix())
		var want []wantEv
		want = append(want, m.put(k("x"), "1", mustPut(t, kv, k("x"), "1").Header.Revision))
		want = append(want, m.put(k("x"), "2", mustPut(t, kv, k("x"), "2").Header.Revision))
		want = append(want, m.put(k("x2"), "a", mustPut(t, kv, k("x2"), "a").Header.Revision))
		want = append(want, m.del(k("x"), mustDelete(t, kv, k("x")).Header.Revision))
		want = append(want, m.put(k("x"), "3", mustPut(t, kv, k("x"), "3").Header.Revision))
		d := mustDelete(t, kv, k("x"), clientv3.WithPrefix())
		want = append(want, m.del(k("x"), d.Header.Revision), m.del(k("x2"), d.Header.Revision))
		evs, _ := recvEvents(t, withPrev, len(want), "watch with prev_kv")
		checkEvents(t, "watch with prev_kv", evs, want, true)
		evs, _ = recvEvents(t, without, len(want), "watch without prev_kv")
		checkEvents(t, "watch without prev_kv", evs, want, false)
	})

	t.Run("Filters", func(t *testing.T) {
		k, m := keyer(t), newKVModel()
		noPut := wcli.Watch(watchCtx(t, callTimeout), k("k"), clientv3.WithFilterPut(), clientv3.WithPrevKV())
		noDel := wcli.Watch(watchCtx(t, callTimeout), k("k"), clientv3.WithFilterDelete())
		var dels, puts []wantEv
		puts = append(puts, m.put(k("k"), "1", mustPut(t, kv, k("k"), "1").Header.Revision))
		puts = append(puts, m.put(k("k"), "2", mustPut(t, kv, k("k"), "2").Header.Revision))
		dels = append(dels, m.del(k("k"), mustDelete(t, kv, k("k")).Header.Revision))
		puts = append(puts, m.put(k("k"), "3", mustPut(t, kv, k("k"), "3").Header.Revision))
		dels = append(dels, m.del(k("k"), mustDelete(t, kv, k("k")).Header.Revision))
		puts = append(puts, m.put(k("k"), "4", mustPut(t, kv, k("k"), "4").Header.Revision))
		// Each watcher's events come in order; had a filtered event leaked through, it would
		// come before the last expected one.
		evs, _ := recvEvents(t, noPut, len(dels), "watch without puts")
		checkEvents(t, "watch without puts", evs, dels, true)
		evs, _ = recvEvents(t, noDel, len(puts), "watch without deletes")
		checkEvents(t, "watch without deletes", evs, puts, false)
		// The filtered watcher is still there: the next delete reaches it.
		next := m.del(k("k"), mustDelete(t, kv, k("k")).Header.Revision)
		evs, _ = recvEvents(t, noPut, 1, "watch without puts, after the puts")
		checkEvents(t, "watch without puts, after the puts", evs, []wantEv{next}, true)
	})

	t.Run("Txn", func(t *testing.T) {
		k, m := keyer(t), newKVModel()
		wch := wcli.Watch(watchCtx(t, callTimeout), k(""), clientv3.WithPrefix(), clientv3.WithPrevKV())
		first := m.put(k("t2"), "old", mustPut(t, kv, k("t2"), "old").Header.Revision)
		evs, _ := recvEvents(t, wch, 1, "put before the txn")
		checkEvents(t, "put before the txn", evs, []wantEv{first}, true)

		tx := mustTxn(t, kv, nil, []clientv3.Op{
			clientv3.OpPut(k("t3"), "c"), clientv3.OpPut(k("t1"), "a"), clientv3.OpPut(k("t2"), "b"),
		}, nil)
		rev := tx.Header.Revision
		want := []wantEv{m.put(k("t3"), "c", rev), m.put(k("t1"), "a", rev), m.put(k("t2"), "b", rev)} // in op order
		evs, resps := recvEvents(t, wch, 3, "txn events")
		if len(resps) != 1 {
			t.Fatalf("the txn's 3 events came in %d responses, want 1", len(resps))
		}
		checkEvents(t, "txn events", evs, want, true)
		if resps[0].Header.Revision != rev {
			t.Fatalf("txn response header revision %d, want %d", resps[0].Header.Revision, rev)
		}

		// A txn mixing a delete and puts of the same key: events in op order at one revision.
		tx = mustTxn(t, kv, nil, []clientv3.Op{
			clientv3.OpDelete(k("t1")), clientv3.OpPut(k("t4"), "d"), clientv3.OpPut(k("t2"), "e"),
		}, nil)
		rev = tx.Header.Revision
		want = []wantEv{m.del(k("t1"), rev), m.put(k("t4"), "d", rev), m.put(k("t2"), "e", rev)}
		evs, resps = recvEvents(t, wch, 3, "second txn events")
		if len(resps) != 1 {
			t.Fatalf("the second txn's 3 events came in %d responses, want 1", len(resps))
		}
		checkEvents(t, "second txn events", evs, want, true)
	})
}

func testWatchHistory(t *testing.T, c *testcluster.Cluster) {
	wm, lm := watchAndWriteMembers(t, c)
	wcli, kv := wm.Client(), lm.Client()
	k, m := keyer(t), newKVModel()

	var want []wantEv
	add := func(evs ...wantEv) { want = append(want, evs...) }
	add(m.put(k("a"), "1", mustPut(t, kv, k("a"), "1").Header.Revision))
	add(m.put(k("b"), "1", mustPut(t, kv, k("b"), "1").Header.Revision))
	mustPut(t, kv, prefix(t)[:len(prefix(t))-1], "not in the prefix")
	tx := mustTxn(t, kv, nil, []clientv3.Op{clientv3.OpPut(k("c"), "1"), clientv3.OpPut(k("a"), "2")}, nil)
	add(m.put(k("c"), "1", tx.Header.Revision), m.put(k("a"), "2", tx.Header.Revision))
	add(m.del(k("b"), mustDelete(t, kv, k("b")).Header.Revision))
	mid := len(want)
	add(m.put(k("b"), "2", mustPut(t, kv, k("b"), "2").Header.Revision))
	d := mustDelete(t, kv, k(""), clientv3.WithPrefix())
	add(m.del(k("a"), d.Header.Revision), m.del(k("b"), d.Header.Revision), m.del(k("c"), d.Header.Revision))
	add(m.put(k("a"), "3", mustPut(t, kv, k("a"), "3").Header.Revision))
	for i := 0; i < 20; i++ {
		add(m.put(k("z"), fmt.Sprint(i), mustPut(t, kv, k("z"), fmt.Sprint(i)).Header.Revision))
	}
	currentRev(t, wcli) // makes the watched member catch up

	// Each case also appends one live event under the prefix, which the later cases replay.
	for _, tc := range []struct {
		name   string
		rev    func() int64 // the start revision
		from   func() int   // the first expected event
		prevKV bool
	}{
		{"FromRev1", func() int64 { return 1 }, func() int { return 0 }, false},
		{"FromFirst", func() int64 { return want[0].kv.ModRevision }, func() int { return 0 }, true},
		{"FromMid", func() int64 { return want[mid].kv.ModRevision }, func() int { return mid }, true},
		{"FromLast", func() int64 { return currentRev(t, wcli) }, func() int { return len(want) - 1 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(tc.rev())}
			if tc.prevKV {
				opts = append(opts, clientv3.WithPrevKV())
			}
			wch := wcli.Watch(watchCtx(t, callTimeout), k(""), opts...)
			evs, _ := recvEvents(t, wch, len(want)-tc.from(), "replay")
			checkEvents(t, "replay", evs, want[tc.from():], tc.prevKV)
			// Then the watcher goes on live, without repeating anything.
			next := m.put(k(tc.name), "live", mustPut(t, kv, k(tc.name), "live").Header.Revision)
			want = append(want, next)
			evs, _ = recvEvents(t, wch, 1, "live after replay")
			checkEvents(t, "live after replay", evs, []wantEv{next}, tc.prevKV)
		})
	}

	t.Run("FutureRev", func(t *testing.T) {
		k := keyer(t)
		cur := currentRev(t, wcli)
		wch := wcli.Watch(watchCtx(t, callTimeout), k(""), clientv3.WithPrefix(), clientv3.WithRev(cur+3))
		m := newKVModel()
		for i := 1; i <= 2; i++ { // cur+1, cur+2: before the start
			m.put(k("f"), fmt.Sprint(i), mustPut(t, kv, k("f"), fmt.Sprint(i)).Header.Revision)
		}
		next := m.put(k("f"), "3", mustPut(t, kv, k("f"), "3").Header.Revision)
		if next.kv.ModRevision != cur+3 {
			t.Skipf("another write interleaved (put at %d, want %d)", next.kv.ModRevision, cur+3)
		}
		evs, _ := recvEvents(t, wch, 1, "watch from a future revision")
		checkEvents(t, "watch from a future revision", evs, []wantEv{next}, false)
	})
}

func testWatchCancel(t *testing.T, c *testcluster.Cluster) {
	wm, lm := watchAndWriteMembers(t, c)
	wcli, kv := wm.Client(), lm.Client()

	t.Run("Context", func(t *testing.T) {
		k, m := keyer(t), newKVModel()
		ctxA, cancelA := contextWithCancel(t)
		wa := wcli.Watch(ctxA, k("a"))
		wb := wcli.Watch(watchCtx(t, callTimeout), k("b"))
		wab := wcli.Watch(watchCtx(t, callTimeout), k("a")) // same key as the canceled one
		ea := m.put(k("a"), "1", mustPut(t, kv, k("a"), "1").Header.Revision)
		eb := m.put(k("b"), "1", mustPut(t, kv, k("b"), "1").Header.Revision)
		evs, _ := recvEvents(t, wa, 1, "watcher a")
		checkEvents(t, "watcher a", evs, []wantEv{ea}, false)
		evs, _ = recvEvents(t, wb, 1, "watcher b")
		checkEvents(t, "watcher b", evs, []wantEv{eb}, false)
		evs, _ = recvEvents(t, wab, 1, "second watcher of a")
		checkEvents(t, "second watcher of a", evs, []wantEv{ea}, false)

		cancelA()
		waitClosed(t, wa, "canceled watcher")
		ea2 := m.put(k("a"), "2", mustPut(t, kv, k("a"), "2").Header.Revision)
		eb2 := m.put(k("b"), "2", mustPut(t, kv, k("b"), "2").Header.Revision)
		evs, _ = recvEvents(t, wb, 1, "watcher b after a was canceled")
		checkEvents(t, "watcher b after a was canceled", evs, []wantEv{eb2}, false)
		evs, _ = recvEvents(t, wab, 1, "second watcher of a after the first was canceled")
		checkEvents(t, "second watcher of a after the first was canceled", evs, []wantEv{ea2}, false)

		// A new watcher on the same stream works.
		wc := wcli.Watch(watchCtx(t, callTimeout), k("a"))
		ea3 := m.put(k("a"), "3", mustPut(t, kv, k("a"), "3").Header.Revision)
		evs, _ = recvEvents(t, wc, 1, "new watcher after a cancel")
		checkEvents(t, "new watcher after a cancel", evs, []wantEv{ea3}, false)
	})

	t.Run("Raw", func(t *testing.T) {
		k := keyer(t)
		s := rawWatchStream(t, wcli, callTimeout)
		idA := rawCreated(t, s, &pb.WatchCreateRequest{Key: []byte(k("a"))})
		idB := rawCreated(t, s, &pb.WatchCreateRequest{Key: []byte(k("b"))})
		if idA == idB {
			t.Fatalf("two watchers got the same id %d", idA)
		}
		rawSend(t, s, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: idA}}})
		resp := rawRecv(t, s, "cancel response")
		if !resp.Canceled || resp.WatchId != idA || len(resp.Events) != 0 || resp.Created {
			t.Fatalf("cancel watcher %d: got %v", idA, resp)
		}
		checkHeader(t, resp.Header)
		// Canceling an unknown id is ignored.
		rawSend(t, s, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 12345}}})
		mustPut(t, kv, k("a"), "1")
		pb2 := mustPut(t, kv, k("b"), "1")
		// The next response is b's event: nothing for a, no reply to the unknown cancel.
		resp = rawRecv(t, s, "event after cancel")
		if resp.WatchId != idB || len(resp.Events) != 1 || string(resp.Events[0].Kv.Key) != k("b") || resp.Events[0].Kv.ModRevision != pb2.Header.Revision {
			t.Fatalf("after canceling watcher %d: got %v, want watcher %d's event at %d", idA, resp, idB, pb2.Header.Revision)
		}
	})
}

func testWatchIDs(t *testing.T, c *testcluster.Cluster) {
	wm, lm := watchAndWriteMembers(t, c)
	wcli, kv := wm.Client(), lm.Client()
	k := keyer(t)
	s := rawWatchStream(t, wcli, callTimeout)
	create := func(id int64, key string) *pb.WatchResponse {
		rawCreate(t, s, &pb.WatchCreateRequest{Key: []byte(k(key)), WatchId: id})
		return rawRecv(t, s, "created response")
	}
	wantCreated := func(resp *pb.WatchResponse, id int64) {
		t.Helper()
		if !resp.Created || resp.Canceled || resp.WatchId != id {
			t.Fatalf("got %v, want created watcher %d", resp, id)
		}
	}
	wantCreated(create(0, "w0"), 0) // automatic ids start at 0
	wantCreated(create(2, "w2"), 2) // a client-chosen id
	wantCreated(create(0, "w1"), 1) // automatic
	wantCreated(create(0, "w3"), 3) // skips the chosen 2
	dup := create(2, "dup")         // duplicate: created and canceled at once
	if !dup.Created || !dup.Canceled || dup.WatchId != clientv3.InvalidWatchID || !strings.Contains(dup.CancelReason, "duplicate") {
		t.Fatalf("duplicate watch id: got %v, want created+canceled with watch id -1 and a duplicate reason", dup)
	}
	// Each id gets exactly its key's events.
	want := map[int64]int64{}
	for _, id := range []int64{3, 1, 2, 0} {
		want[id] = mustPut(t, kv, k(fmt.Sprintf("w%d", id)), "v").Header.Revision
	}
	mustPut(t, kv, k("dup"), "v")
	for len(want) > 0 {
		resp := rawRecv(t, s, "events")
		rev, ok := want[resp.WatchId]
		if !ok || len(resp.Events) != 1 || string(resp.Events[0].Kv.Key) != k(fmt.Sprintf("w%d", resp.WatchId)) || resp.Events[0].Kv.ModRevision != rev {
			t.Fatalf("got %v; still expecting events for watchers %v", resp, want)
		}
		delete(want, resp.WatchId)
	}
}

func testWatchMany(t *testing.T, c *testcluster.Cluster) {
	wm, lm := watchAndWriteMembers(t, c)
	wcli, kv := wm.Client(), lm.Client()
	k := keyer(t)
	const n = 100
	chans := make([]clientv3.WatchChan, n)
	for i := range chans {
		chans[i] = wcli.Watch(watchCtx(t, callTimeout), k(fmt.Sprintf("%03d", i)), clientv3.WithPrevKV())
	}
	m := newKVModel()
	for round := 1; round <= 2; round++ {
		want := make([]wantEv, n)
		// Write in an order unrelated to the watcher ids.
		for j := 0; j < n; j++ {
			i := (j * 37) % n
			key, val := k(fmt.Sprintf("%03d", i)), fmt.Sprintf("r%d", round)
			want[i] = m.put(key, val, mustPut(t, kv, key, val).Header.Revision)
		}
		for i, wch := range chans {
			what := fmt.Sprintf("round %d, watcher %d", round, i)
			evs, _ := recvEvents(t, wch, 1, what)
			checkEvents(t, what, evs, []wantEv{want[i]}, true)
		}
	}
}

func testWatchRequestProgress(t *testing.T, c *testcluster.Cluster) {
	wm, lm := watchAndWriteMembers(t, c)
	wcli, kv := wm.Client(), lm.Client()
	k := keyer(t)
	wctx := watchCtx(t, callTimeout)
	wa := wcli.Watch(wctx, k("a"))
	wb := wcli.Watch(wctx, k("b"))
	p := mustPut(t, kv, k("a"), "1")
	evs, _ := recvEvents(t, wa, 1, "event before progress")
	if evs[0].Kv.ModRevision != p.Header.Revision {
		t.Fatalf("event at %d, want %d", evs[0].Kv.ModRevision, p.Header.Revision)
	}
	mustPut(t, kv, k("c"), "unwatched")
	cur := currentRev(t, wcli) // the watched member has applied everything up to cur
	if err := wcli.RequestProgress(wctx); err != nil {
		t.Fatalf("request progress: %v", err)
	}
	for name, wch := range map[string]clientv3.WatchChan{"a": wa, "b": wb} {
		resp := recvResp(t, wch, "progress of "+name)
		if !resp.IsProgressNotify() {
			t.Fatalf("watcher %s: got %+v, want a progress notification", name, resp)
		}
		checkHeader(t, resp.Header)
		if resp.Header.Revision != cur {
			t.Fatalf("watcher %s: progress notification at revision %d, want the current revision %d", name, resp.Header.Revision, cur)
		}
	}
	// Watching goes on after the progress notification.
	p = mustPut(t, kv, k("b"), "1")
	evs, _ = recvEvents(t, wb, 1, "event after progress")
	if evs[0].Kv.ModRevision != p.Header.Revision {
		t.Fatalf("event at %d, want %d", evs[0].Kv.ModRevision, p.Header.Revision)
	}
}

func testWatchOrdering(t *testing.T, c *testcluster.Cluster) {
	runOrdering(t, c, 2000, 8, 20)
}

func testWatchCompaction(t *testing.T, c *testcluster.Cluster) {
	wm, lm := watchAndWriteMembers(t, c)
	wcli, kv := wm.Client(), lm.Client()
	k, m := keyer(t), newKVModel()
	var all []wantEv
	all = append(all, m.put(k("a"), "1", mustPut(t, kv, k("a"), "1").Header.Revision))
	all = append(all, m.put(k("b"), "1", mustPut(t, kv, k("b"), "1").Header.Revision))
	all = append(all, m.put(k("a"), "2", mustPut(t, kv, k("a"), "2").Header.Revision))
	compactAt := all[len(all)-1].kv.ModRevision
	all = append(all, m.del(k("b"), mustDelete(t, kv, k("b")).Header.Revision))
	all = append(all, m.put(k("c"), "1", mustPut(t, kv, k("c"), "1").Header.Revision))
	all = append(all, m.put(k("a"), "3", mustPut(t, kv, k("a"), "3").Header.Revision))
	if _, err := kv.Compact(ctx(t), compactAt, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact at %d: %v", compactAt, err)
	}
	currentRev(t, wcli) // the watched member applied the compaction

	// Just below the compact revision the member's in-memory ring still holds the history;
	// from revision 1 (before the member started) it reads storage. Both must be compacted.
	for name, rev := range map[string]int64{"JustBelowCompactRev": compactAt - 1, "FromRev1": 1} {
		t.Run(name, func(t *testing.T) {
			wch := wcli.Watch(watchCtx(t, callTimeout), k(""), clientv3.WithPrefix(), clientv3.WithRev(rev))
			resp := recvResp(t, wch, "watch below the compact revision")
			if resp.CompactRevision != compactAt || !resp.Canceled || !isErr(resp.Err(), rpctypes.ErrCompacted) || len(resp.Events) != 0 || resp.Header.Revision != 0 {
				t.Fatalf("watch from %d after compacting at %d: got compact revision %d, canceled %v, err %v, %d events %s, header revision %d; want compact revision %d, canceled, %v, no events, header revision 0 (as etcd)",
					rev, compactAt, resp.CompactRevision, resp.Canceled, resp.Err(), len(resp.Events), eventsString(resp.Events), resp.Header.Revision, compactAt, rpctypes.ErrCompacted)
			}
			waitClosed(t, wch, "compacted watcher")
		})
	}
	t.Run("AtCompactRev", func(t *testing.T) {
		wch := wcli.Watch(watchCtx(t, callTimeout), k(""), clientv3.WithPrefix(), clientv3.WithRev(compactAt))
		evs, _ := recvEvents(t, wch, len(all)-2, "watch from the compact revision")
		checkEvents(t, "watch from the compact revision", evs, all[2:], false)
	})
}
