package server_test

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestWatchProgressNotify checks periodic progress notifications
// (--watch-progress-notify-interval) on a 1-member cluster and through a follower of a
// 3-member one: an idle watcher that asked for them (clientv3.WithProgressNotify) gets them at
// the current revision; one that did not, gets none.
func TestWatchProgressNotify(t *testing.T) {
	checkNoWatchLeaks(t)
	for _, size := range clusterSizes {
		t.Run(size.name, func(t *testing.T) {
			t.Parallel()
			c := testcluster.New(t, size.n, testcluster.Options{Args: []string{"--watch-progress-notify-interval", "200ms"}})
			testWatchProgressNotify(t, c)
		})
	}
}

func testWatchProgressNotify(t *testing.T, c *testcluster.Cluster) {
	wm, lm := watchAndWriteMembers(t, c)
	wcli, kv := wm.Client(), lm.Client()
	k := keyer(t)
	wctx := watchCtx(t, callTimeout)
	notified := wcli.Watch(wctx, k("a"), clientv3.WithProgressNotify())
	silent := wcli.Watch(wctx, k("b"))
	cur := currentRev(t, wcli)

	// nextProgress returns the next progress notification's revision, skipping none: any
	// event before it fails.
	nextProgress := func(what string) int64 {
		t.Helper()
		began := time.Now()
		resp := recvResp(t, notified, what)
		if !resp.IsProgressNotify() {
			t.Fatalf("%s: got %+v, want a progress notification", what, resp)
		}
		checkHeader(t, resp.Header)
		t.Logf("%s after %v at revision %d", what, time.Since(began).Round(time.Millisecond), resp.Header.Revision)
		return resp.Header.Revision
	}
	for i := 0; i < 2; i++ {
		if rev := nextProgress("idle progress notification"); rev != cur {
			t.Fatalf("idle progress notification at revision %d, want the current revision %d", rev, cur)
		}
	}

	// After an event, notifications continue at the event's revision (nothing else is written).
	p := mustPut(t, kv, k("a"), "1").Header.Revision
	for {
		resp := recvResp(t, notified, "event")
		if resp.IsProgressNotify() {
			if resp.Header.Revision > p {
				t.Fatalf("progress notification at %d before the event at %d", resp.Header.Revision, p)
			}
			continue
		}
		if err := resp.Err(); err != nil || len(resp.Events) != 1 || resp.Events[0].Kv.ModRevision != p {
			t.Fatalf("got %+v (err %v), want the put at %d", resp, err, p)
		}
		break
	}
	if rev := nextProgress("progress notification after the event"); rev != p {
		t.Fatalf("progress notification after the event at revision %d, want %d", rev, p)
	}

	// The watcher that did not ask has received nothing but its own event.
	pb := mustPut(t, kv, k("b"), "1").Header.Revision
	evs, _ := recvEvents(t, silent, 1, "watcher without progress notifications")
	if evs[0].Kv.ModRevision != pb {
		t.Fatalf("watcher without progress notifications: event at %d, want %d", evs[0].Kv.ModRevision, pb)
	}
}
