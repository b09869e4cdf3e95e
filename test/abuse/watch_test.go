package abuse_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// rawWatch opens a Watch stream on cli's connection with etcd's generated client; it ends with
// ctx.
func rawWatch(ctx context.Context, cli *clientv3.Client) (pb.Watch_WatchClient, error) {
	s, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(ctx, grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		return nil, fmt.Errorf("open watch stream: %w", err)
	}
	return s, nil
}

func createReq(key string, start int64, prevKV bool) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte(key), StartRevision: start, PrevKv: prevKV}}}
}

// TestWatcherStorm spreads many watchers over many connections and streams, all on a few keys,
// while a writer puts to those keys: every watcher must see exactly its key's events in order,
// the writer's latency must stay in its normal order of magnitude and the member within its
// memory.
func TestWatcherStorm(t *testing.T) {
	c, mws := newCluster(t, 1)
	m := c.Members[0]
	conns, streams, perStream := pick(20, 200), pick(5, 5), pick(50, 100)
	const keys = 4
	puts := pick(100, 500)
	writer := newClient(t, clientv3.Config{}, m)

	// The writer's latency before any watcher exists.
	val := strings.Repeat("v", 1<<10)
	var before latencies
	for i := 0; i < 50; i++ {
		start := time.Now()
		if _, err := writer.Put(ctx(t), fmt.Sprintf("/storm/%d", i%keys), val); err != nil {
			t.Fatalf("put: %v", err)
		}
		before.add(time.Since(start))
	}
	g, err := writer.Get(ctx(t), "/storm/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	startRev := g.Header.Revision + 1

	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type streamState struct {
		s    pb.Watch_WatchClient
		keys map[int64]int // watch id -> key index
	}
	var states []*streamState
	began := time.Now()
	for i := 0; i < conns; i++ {
		cli := newClient(t, clientv3.Config{}, m)
		for j := 0; j < streams; j++ {
			s, err := rawWatch(wctx, cli)
			if err != nil {
				t.Fatalf("%v", err)
			}
			st := &streamState{s: s, keys: map[int64]int{}}
			for w := 0; w < perStream; w++ {
				if err := s.Send(createReq(fmt.Sprintf("/storm/%d", w%keys), startRev, false)); err != nil {
					t.Fatalf("create watcher: %v", err)
				}
			}
			for w := 0; w < perStream; w++ {
				resp, err := s.Recv()
				if err != nil {
					t.Fatalf("created response: %v", err)
				}
				if !resp.Created || resp.Canceled {
					t.Fatalf("create watcher: got %v", resp)
				}
				st.keys[resp.WatchId] = w % keys // ids are given in request order
			}
			states = append(states, st)
		}
	}
	total := conns * streams * perStream
	t.Logf("%d watchers on %d streams over %d connections created in %v", total, len(states), conns, time.Since(began).Round(time.Millisecond))

	// Every stream counts its events per watcher and checks their order.
	perKey := make([]int, keys)
	for i := 0; i < puts; i++ {
		perKey[i%keys]++
	}
	var delivered atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(states))
	for _, st := range states {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := map[int64]int64{}
			seen := map[int64]int{}
			remaining := 0
			for _, k := range st.keys {
				remaining += perKey[k]
			}
			for remaining > 0 {
				resp, err := st.s.Recv()
				if err != nil {
					errs <- fmt.Errorf("stream: %d events missing: %w", remaining, err)
					return
				}
				k, ok := st.keys[resp.WatchId]
				if !ok || resp.Canceled {
					errs <- fmt.Errorf("unexpected response %v", resp)
					return
				}
				for _, ev := range resp.Events {
					if string(ev.Kv.Key) != fmt.Sprintf("/storm/%d", k) || ev.Kv.ModRevision <= last[resp.WatchId] {
						errs <- fmt.Errorf("watcher %d: event %s at %d after %d", resp.WatchId, ev.Kv.Key, ev.Kv.ModRevision, last[resp.WatchId])
						return
					}
					last[resp.WatchId] = ev.Kv.ModRevision
					seen[resp.WatchId]++
					if seen[resp.WatchId] > perKey[k] {
						errs <- fmt.Errorf("watcher %d: more events than puts", resp.WatchId)
						return
					}
					remaining--
					delivered.Add(1)
				}
			}
		}()
	}

	var during latencies
	began = time.Now()
	for i := 0; i < puts; i++ {
		start := time.Now()
		if _, err := writer.Put(ctx(t), fmt.Sprintf("/storm/%d", i%keys), val); err != nil {
			t.Fatalf("put: %v", err)
		}
		during.add(time.Since(start))
	}
	waitDone := make(chan struct{})
	go func() { wg.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case err := <-errs:
		cancel()
		<-waitDone
		t.Fatalf("%v", err)
	case <-time.After(pick(60*time.Second, 5*time.Minute)):
		cancel()
		<-waitDone
		t.Fatalf("only %d of %d events delivered", delivered.Load(), int64(total/keys)*int64(puts))
	}
	select {
	case err := <-errs:
		t.Fatalf("%v", err)
	default:
	}
	t.Logf("%d puts with %d watchers: %d events delivered in %v; put latency without watchers %v, with watchers %v",
		puts, total, delivered.Load(), time.Since(began).Round(time.Millisecond), &before, &during)
	checkLatency(t, &before, &during)
	cancel()
	mws[0].check(t)
}

// checkLatency fails unless the p99 latency during the abuse stays within ten times the p99
// before it, taken as at least 50 ms: the shared machines tests run on have fsync hiccups of
// tens of milliseconds without any abuse.
func checkLatency(t *testing.T, before, during *latencies) {
	t.Helper()
	if b, d := before.quantile(0.99), during.quantile(0.99); d > 10*max(b, 50*time.Millisecond) {
		t.Errorf("p99 put latency rose from %v to %v", b, d)
	}
}

// TestSlowWatchers opens watch streams on their own connections that stop reading while a
// writer puts large values: writes keep their latency, the member stays within its memory, and
// each stream, once read again, delivers every event in order; a stream whose next revision
// was compacted while it was stalled is canceled with the compact revision.
func TestSlowWatchers(t *testing.T) {
	c, mws := newCluster(t, 1)
	m := c.Members[0]
	slow := pick(6, 64)
	valSize := 128 << 10
	total := pick(48<<20, 1<<30)
	const keys = 16
	writer := newClient(t, clientv3.Config{}, m)
	val := strings.Repeat("s", valSize)

	var before latencies
	for i := 0; i < 30; i++ {
		start := time.Now()
		if _, err := writer.Put(ctx(t), fmt.Sprintf("/slow/%d", i%keys), val); err != nil {
			t.Fatalf("put: %v", err)
		}
		before.add(time.Since(start))
	}
	g, err := writer.Get(ctx(t), "/slow/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	startRev := g.Header.Revision + 1

	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ss []pb.Watch_WatchClient
	for i := 0; i < slow; i++ {
		s, err := rawWatch(wctx, newClient(t, clientv3.Config{}, m))
		if err != nil {
			t.Fatalf("%v", err)
		}
		req := createReq("/slow/", startRev, true)
		req.GetCreateRequest().RangeEnd = []byte(clientv3.GetPrefixRangeEnd("/slow/"))
		if err := s.Send(req); err != nil {
			t.Fatalf("create: %v", err)
		}
		if resp, err := s.Recv(); err != nil || !resp.Created {
			t.Fatalf("created: %v %v", resp, err)
		}
		ss = append(ss, s) // not read again until the writer is done
	}

	// Write while nobody reads.
	var during latencies
	var revs []int64
	began := time.Now()
	for i := 0; i < total/valSize; i++ {
		start := time.Now()
		resp, err := writer.Put(ctx(t), fmt.Sprintf("/slow/%d", i%keys), val)
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		during.add(time.Since(start))
		revs = append(revs, resp.Header.Revision)
	}
	t.Logf("%d slow streams: %s written in %v; put latency before %v, while stalled %v",
		slow, mib(int64(total)), time.Since(began).Round(time.Millisecond), &before, &during)
	peakStalled, _ := mws[0].peak()
	checkLatency(t, &before, &during)

	// A stalled watcher whose history gets compacted: opened now, stalled, then compacted past.
	cs, err := rawWatch(wctx, newClient(t, clientv3.Config{}, m))
	if err != nil {
		t.Fatalf("%v", err)
	}
	cr := createReq("/slow/", revs[len(revs)-1]+1, true)
	cr.GetCreateRequest().RangeEnd = []byte(clientv3.GetPrefixRangeEnd("/slow/"))
	if err := cs.Send(cr); err != nil {
		t.Fatalf("create: %v", err)
	}
	if resp, err := cs.Recv(); err != nil || !resp.Created {
		t.Fatalf("created: %v %v", resp, err)
	}
	var lastRev int64
	for i := 0; i < 2*64; i++ { // ~16 MiB: more than flow control lets through unread
		resp, err := writer.Put(ctx(t), fmt.Sprintf("/slow/%d", i%keys), val)
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		lastRev = resp.Header.Revision
	}

	// Resume every slow stream at once: each delivers every event in order.
	began = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, slow)
	for i, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := 0
			for next < len(revs) {
				resp, err := s.Recv()
				if err != nil {
					errs <- fmt.Errorf("stream %d: after %d of %d events: %w", i, next, len(revs), err)
					return
				}
				if resp.Canceled || resp.CompactRevision != 0 {
					errs <- fmt.Errorf("stream %d: canceled after %d events: %v", i, next, resp)
					return
				}
				for _, ev := range resp.Events {
					if next >= len(revs) {
						break // events of the later puts
					}
					if ev.Kv.ModRevision != revs[next] || len(ev.Kv.Value) != valSize {
						errs <- fmt.Errorf("stream %d: event %d at revision %d (%d bytes), want revision %d", i, next, ev.Kv.ModRevision, len(ev.Kv.Value), revs[next])
						return
					}
					next++
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%v", err)
	}
	t.Logf("%d slow streams caught up on %d events each in %v", slow, len(revs), time.Since(began).Round(time.Millisecond))

	// Compact past the stalled watcher's position, then read it: the events that were already
	// on the way in order, then a cancel carrying the compact revision.
	if _, err := writer.Compact(ctx(t), lastRev); err != nil {
		t.Fatalf("compact: %v", err)
	}
	var got int64
	for {
		resp, err := cs.Recv()
		if err != nil {
			t.Fatalf("compacted watcher: %v", err)
		}
		if resp.Canceled {
			if resp.CompactRevision != lastRev {
				t.Fatalf("compacted watcher canceled with %v, want compact revision %d", resp, lastRev)
			}
			t.Logf("stalled watcher got %d events, then a cancel at compact revision %d", got, resp.CompactRevision)
			break
		}
		for _, ev := range resp.Events {
			if want := cr.GetCreateRequest().StartRevision + got; ev.Kv.ModRevision != want {
				t.Fatalf("compacted watcher: event at %d, want %d", ev.Kv.ModRevision, want)
			}
			got++
		}
	}
	cancel()
	peak := mws[0].check(t)
	t.Logf("peak RSS while stalled %s, at the end %s", mib(peakStalled), mib(peak))
}

// TestMaxConcurrentStreams checks that --max-concurrent-streams bounds the streams of one
// connection: a stream over the limit waits (the client's gRPC holds it back) while other
// connections are served.
func TestMaxConcurrentStreams(t *testing.T) {
	c, mws := newCluster(t, 1, "--max-concurrent-streams", "8")
	m := c.Members[0]
	cli := newClient(t, clientv3.Config{}, m)
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 8; i++ {
		s, err := rawWatch(wctx, cli)
		if err != nil {
			t.Fatalf("%v", err)
		}
		if err := s.Send(createReq("/streams", 0, false)); err != nil {
			t.Fatalf("create: %v", err)
		}
		if resp, err := s.Recv(); err != nil || !resp.Created {
			t.Fatalf("created: %v %v", resp, err)
		}
	}
	// The ninth stream on the same connection is not opened before its deadline.
	short, scancel := context.WithTimeout(wctx, time.Second)
	defer scancel()
	_, err := cli.Get(short, "/streams")
	if err == nil {
		t.Fatalf("a ninth stream on a connection limited to 8 was served")
	}
	t.Logf("ninth stream: %v", err)
	// Another connection is served.
	if _, err := newClient(t, clientv3.Config{}, m).Put(ctx(t), "/streams", "x"); err != nil {
		t.Fatalf("put on a new connection: %v", err)
	}
	cancel()
	mws[0].check(t)
}
