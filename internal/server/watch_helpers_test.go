package server_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// watchTimeout bounds every wait for a watch response in these tests.
const watchTimeout = 15 * time.Second

// checkNoWatchLeaks fails the test if goroutines started during it outlive it. Call it before
// starting any cluster so its check runs after the cluster's cleanup.
func checkNoWatchLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines leaked after the clusters stopped: %v", err)
		}
	})
}

// watchCtx returns a context for one watch; it is canceled when the test ends at the latest.
func watchCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// watchAndWriteMembers returns the member to watch through (a follower when there is one) and
// the member to write through (the leader).
func watchAndWriteMembers(t testing.TB, c *testcluster.Cluster) (watchM, writeM *testcluster.Member) {
	t.Helper()
	lead, err := c.Leader(30 * time.Second)
	if err != nil {
		t.Fatalf("leader: %v", err)
	}
	return c.Members[(lead+1)%len(c.Members)], c.Members[lead]
}

// recvResp returns the next response on wch; it fails the test if none arrives in time or the
// channel is closed.
func recvResp(t testing.TB, wch clientv3.WatchChan, what string) clientv3.WatchResponse {
	t.Helper()
	timer := time.NewTimer(watchTimeout)
	defer timer.Stop()
	select {
	case resp, ok := <-wch:
		if !ok {
			t.Fatalf("%s: watch channel closed", what)
		}
		return resp
	case <-timer.C:
		t.Fatalf("%s: no watch response after %v", what, watchTimeout)
	}
	panic("unreachable")
}

// recvEvents reads responses until at least n events arrived and returns the events and the
// responses that carried them. Any error, cancellation or progress notification fails.
func recvEvents(t testing.TB, wch clientv3.WatchChan, n int, what string) ([]*clientv3.Event, []clientv3.WatchResponse) {
	t.Helper()
	var evs []*clientv3.Event
	var resps []clientv3.WatchResponse
	for len(evs) < n {
		resp := recvResp(t, wch, what)
		if err := resp.Err(); err != nil || resp.Canceled {
			t.Fatalf("%s: after %d of %d events: watch response error %v (canceled %v, compact revision %d)", what, len(evs), n, err, resp.Canceled, resp.CompactRevision)
		}
		if len(resp.Events) == 0 {
			t.Fatalf("%s: after %d of %d events: unexpected response without events: %+v", what, len(evs), n, resp)
		}
		checkHeader(t, resp.Header)
		if last := resp.Events[len(resp.Events)-1].Kv.ModRevision; resp.Header.Revision < last {
			t.Fatalf("%s: response header revision %d below its last event's revision %d", what, resp.Header.Revision, last)
		}
		evs = append(evs, resp.Events...)
		resps = append(resps, resp)
	}
	return evs, resps
}

// wantEv is an expected event.
type wantEv struct {
	typ  mvccpb.Event_EventType
	kv   *mvccpb.KeyValue
	prev *mvccpb.KeyValue
}

func (e wantEv) String() string {
	return fmt.Sprintf("%v %q=%q@%d(create %d ver %d)", e.typ, e.kv.Key, truncate(e.kv.Value), e.kv.ModRevision, e.kv.CreateRevision, e.kv.Version)
}

// kvModel computes the events etcd produces for a sequence of writes.
type kvModel struct{ kvs map[string]*mvccpb.KeyValue }

func newKVModel() *kvModel { return &kvModel{kvs: map[string]*mvccpb.KeyValue{}} }

func (m *kvModel) put(key, val string, rev int64) wantEv {
	prev := m.kvs[key]
	kv := &mvccpb.KeyValue{Key: []byte(key), Value: []byte(val), CreateRevision: rev, ModRevision: rev, Version: 1}
	if prev != nil {
		kv.CreateRevision, kv.Version = prev.CreateRevision, prev.Version+1
	}
	if val == "" {
		kv.Value = nil
	}
	m.kvs[key] = kv
	return wantEv{typ: mvccpb.PUT, kv: kv, prev: prev}
}

func (m *kvModel) del(key string, rev int64) wantEv {
	prev := m.kvs[key]
	if prev == nil {
		panic("model: delete of a missing key " + key)
	}
	delete(m.kvs, key)
	return wantEv{typ: mvccpb.DELETE, kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: rev}, prev: prev}
}

func kvString(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	return fmt.Sprintf("{key %q value %q create %d mod %d ver %d lease %d}", kv.Key, truncate(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

func sameKV(a, b *mvccpb.KeyValue) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return proto.Equal(a, b)
}

// checkEvent compares one received event with the expected one; prevKV says whether the
// watcher asked for previous values.
func checkEvent(t testing.TB, what string, got *clientv3.Event, want wantEv, prevKV bool) {
	t.Helper()
	if got.Type != want.typ || !sameKV(got.Kv, want.kv) {
		t.Fatalf("%s: got event %v %s, want %v %s", what, got.Type, kvString(got.Kv), want.typ, kvString(want.kv))
	}
	wantPrev := want.prev
	if !prevKV {
		wantPrev = nil
	}
	if !sameKV(got.PrevKv, wantPrev) {
		t.Fatalf("%s: event %v %q@%d: got prev_kv %s, want %s (watcher asked for prev_kv: %v)", what, got.Type, got.Kv.Key, got.Kv.ModRevision, kvString(got.PrevKv), kvString(wantPrev), prevKV)
	}
}

// checkEvents compares received events with the expected ones, in order.
func checkEvents(t testing.TB, what string, got []*clientv3.Event, want []wantEv, prevKV bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d events %s, want %d %v", what, len(got), eventsString(got), len(want), want)
	}
	for i := range got {
		checkEvent(t, fmt.Sprintf("%s: event %d", what, i), got[i], want[i], prevKV)
	}
}

func eventsString(evs []*clientv3.Event) string {
	s := "["
	for i, ev := range evs {
		if i > 0 {
			s += " "
		}
		if i == 20 {
			s += fmt.Sprintf("...(%d more)", len(evs)-i)
			break
		}
		s += fmt.Sprintf("%v %q@%d", ev.Type, ev.Kv.Key, ev.Kv.ModRevision)
	}
	return s + "]"
}

// seqChecker checks a stream of events from a prefix that only single-key puts change: every
// revision from the first expected one on must arrive exactly once, in order, and each event's
// previous value (when asked for) and version must continue what the stream showed of the key.
type seqChecker struct {
	next   int64 // the revision the next event must have
	prevKV bool
	last   map[string]*mvccpb.KeyValue
	seen   map[int64]*mvccpb.KeyValue
}

func newSeqChecker(start int64, prevKV bool) *seqChecker {
	return &seqChecker{next: start, prevKV: prevKV, last: map[string]*mvccpb.KeyValue{}, seen: map[int64]*mvccpb.KeyValue{}}
}

func (c *seqChecker) add(ev *clientv3.Event) error {
	rev := ev.Kv.ModRevision
	switch {
	case ev.Type != mvccpb.PUT:
		return fmt.Errorf("unexpected %v event %s", ev.Type, kvString(ev.Kv))
	case rev < c.next:
		return fmt.Errorf("event at revision %d (%q) after revision %d was delivered: duplicate or out of order", rev, ev.Kv.Key, c.next-1)
	case rev > c.next:
		return fmt.Errorf("event at revision %d (%q) but revision %d was never delivered: gap", rev, ev.Kv.Key, c.next)
	}
	prev := c.last[string(ev.Kv.Key)]
	if c.prevKV && !sameKV(ev.PrevKv, prev) {
		return fmt.Errorf("event %s: prev_kv %s, the previous event of the key was %s", kvString(ev.Kv), kvString(ev.PrevKv), kvString(prev))
	}
	if !c.prevKV && ev.PrevKv != nil {
		return fmt.Errorf("event %s carries prev_kv %s though the watcher did not ask for it", kvString(ev.Kv), kvString(ev.PrevKv))
	}
	if prev != nil && (ev.Kv.Version != prev.Version+1 || ev.Kv.CreateRevision != prev.CreateRevision) {
		return fmt.Errorf("event %s does not continue the key's previous event %s", kvString(ev.Kv), kvString(prev))
	}
	c.last[string(ev.Kv.Key)] = ev.Kv
	c.seen[rev] = ev.Kv
	c.next++
	return nil
}

// checkAcked fails unless every acknowledged put (revision -> key=value) was delivered as such.
func (c *seqChecker) checkAcked(acked map[int64][2]string) error {
	for rev, kv := range acked {
		got, ok := c.seen[rev]
		if !ok {
			return fmt.Errorf("acknowledged put %s=%s at revision %d never delivered", kv[0], kv[1], rev)
		}
		if string(got.Key) != kv[0] || string(got.Value) != kv[1] {
			return fmt.Errorf("revision %d: delivered %s, acknowledged put %s=%s", rev, kvString(got), kv[0], kv[1])
		}
	}
	return nil
}

// rawWatchStream opens a Watch stream with etcd's generated client on cli's connection, with
// clientv3's receive limit (clientv3 passes it on each call, not on the connection). The
// stream ends when the test does, or after d.
func rawWatchStream(t testing.TB, cli *clientv3.Client, d time.Duration) pb.Watch_WatchClient {
	t.Helper()
	s, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(watchCtx(t, d), grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		t.Fatalf("open watch stream: %v", err)
	}
	return s
}

func rawSend(t testing.TB, s pb.Watch_WatchClient, req *pb.WatchRequest) {
	t.Helper()
	if err := s.Send(req); err != nil {
		t.Fatalf("send watch request %v: %v", req, err)
	}
}

func rawCreate(t testing.TB, s pb.Watch_WatchClient, cr *pb.WatchCreateRequest) {
	t.Helper()
	rawSend(t, s, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}})
}

func rawRecv(t testing.TB, s pb.Watch_WatchClient, what string) *pb.WatchResponse {
	t.Helper()
	resp, err := s.Recv()
	if err != nil {
		t.Fatalf("%s: receive: %v", what, err)
	}
	return resp
}

// rawCreated creates a watcher and returns its id from the created response.
func rawCreated(t testing.TB, s pb.Watch_WatchClient, cr *pb.WatchCreateRequest) int64 {
	t.Helper()
	rawCreate(t, s, cr)
	resp := rawRecv(t, s, "created response")
	if !resp.Created || resp.Canceled || len(resp.Events) != 0 {
		t.Fatalf("create watcher %v: got %v, want a created response", cr, resp)
	}
	checkHeader(t, resp.Header)
	return resp.WatchId
}

// prefixEnd is clientv3's range end for a prefix.
func prefixEnd(p string) string { return clientv3.GetPrefixRangeEnd(p) }
