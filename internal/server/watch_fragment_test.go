package server_test

import (
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/config"
	"github.com/ordo-db/ordo/internal/testcluster"
)

// testWatchFragment writes one revision whose events (20 deletes carrying 100 KiB previous
// values) exceed --max-request-bytes (default 1.5 MiB): a watcher that asked for fragments
// gets it split below the limit and clientv3 reassembles it; one that did not gets it whole.
func testWatchFragment(t *testing.T, c *testcluster.Cluster) {
	wm, lm := watchAndWriteMembers(t, c)
	wcli, kv := wm.Client(), lm.Client()
	k, m := keyer(t), newKVModel()
	const n = 20
	limit := config.DefaultMaxRequestBytes
	big := strings.Repeat("v", 100<<10)

	s := rawWatchStream(t, wcli, callTimeout)
	rawCreated(t, s, &pb.WatchCreateRequest{Key: []byte(k("")), RangeEnd: []byte(prefixEnd(k(""))), PrevKv: true, Fragment: true})
	wctx := watchCtx(t, callTimeout)
	frag := wcli.Watch(wctx, k(""), clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithFragment())
	whole := wcli.Watch(wctx, k(""), clientv3.WithPrefix(), clientv3.WithPrevKV())

	var want []wantEv
	for i := 0; i < n; i++ {
		key, val := k(fmt.Sprintf("%02d", i)), fmt.Sprintf("%02d%s", i, big)
		want = append(want, m.put(key, val, mustPut(t, kv, key, val).Header.Revision))
	}
	d := mustDelete(t, kv, k(""), clientv3.WithPrefix())
	if d.Deleted != n {
		t.Fatalf("deleted %d keys, want %d", d.Deleted, n)
	}
	for i := 0; i < n; i++ {
		want = append(want, m.del(k(fmt.Sprintf("%02d", i)), d.Header.Revision))
	}

	t.Run("Wire", func(t *testing.T) {
		var evs []*clientv3.Event
		var fragments, maxFragments int
		for len(evs) < len(want) {
			resp := rawRecv(t, s, "fragment")
			checkHeader(t, resp.Header)
			if resp.Canceled || resp.Created || resp.CompactRevision != 0 {
				t.Fatalf("unexpected response %v", resp.Header)
			}
			if size := proto.Size(resp); size >= limit && len(resp.Events) > 1 {
				t.Fatalf("fragment of %d events is %d bytes, not below --max-request-bytes %d", len(resp.Events), size, limit)
			}
			for _, ev := range resp.Events {
				evs = append(evs, (*clientv3.Event)(ev))
			}
			fragments++
			if !resp.Fragment {
				maxFragments = max(maxFragments, fragments)
				fragments = 0
			}
		}
		if fragments != 0 {
			t.Fatalf("the last response was marked as a fragment with more to come")
		}
		checkEvents(t, "fragmented events", evs, want, true)
		if maxFragments < 2 {
			t.Fatalf("a %d-event revision over --max-request-bytes was never fragmented", n)
		}
	})

	for name, wch := range map[string]clientv3.WatchChan{"Reassembled": frag, "Unfragmented": whole} {
		t.Run(name, func(t *testing.T) {
			evs, resps := recvEvents(t, wch, len(want), "events")
			checkEvents(t, "events", evs, want, true)
			last := resps[len(resps)-1]
			if len(last.Events) < n {
				t.Fatalf("the %d deletes of one revision came split over clientv3 responses: the last has %d events", n, len(last.Events))
			}
		})
	}

	t.Run("Replay", func(t *testing.T) {
		wch := wcli.Watch(watchCtx(t, callTimeout), k(""), clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithFragment(),
			clientv3.WithRev(want[0].kv.ModRevision))
		evs, _ := recvEvents(t, wch, len(want), "replay")
		checkEvents(t, "replay", evs, want, true)
	})
}
