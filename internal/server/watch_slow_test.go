package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/testcluster"
	"github.com/ordo-db/ordo/internal/watch"
)

// putBurst has writers goroutines put n values of size bytes to keys distinct keys under p
// through kv, records the acknowledged puts in log and returns the put latencies.
func putBurst(t *testing.T, kv *clientv3.Client, p string, n, size, keys, writers int, log *putLog) []time.Duration {
	t.Helper()
	pad := strings.Repeat("x", size)
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				key, val := fmt.Sprintf("%s%03d", p, i%keys), fmt.Sprintf("%d/%s", i, pad)
				cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				began := time.Now()
				resp, err := kv.Put(cctx, key, val)
				d := time.Since(began)
				cancel()
				if err != nil {
					t.Errorf("put %s: %v", key, err)
					return
				}
				if err := log.add(resp.Header.Revision, key, val); err != nil {
					t.Errorf("%v", err)
					return
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return lat
}

func latencySummary(lat []time.Duration) string {
	if len(lat) == 0 {
		return "no puts"
	}
	slices.Sort(lat)
	return fmt.Sprintf("%d puts: p50 %v, p99 %v, max %v", len(lat), lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
}

// readStats describes the responses a stalled watcher got.
type readStats struct {
	resps      int
	maxEvents  int // the most events in one response
	maxBytes   int // the largest response
	maxPayload int // the most value + previous value bytes in one response
}

func (st readStats) String() string {
	return fmt.Sprintf("%d responses (largest: %d events, %d bytes, %d bytes of values and previous values)", st.resps, st.maxEvents, st.maxBytes, st.maxPayload)
}

// rawReadSeq reads the responses of watcher id on s until chk holds n events.
func rawReadSeq(s pb.Watch_WatchClient, id int64, chk *seqChecker, n int) (st readStats, err error) {
	for len(chk.seen) < n {
		resp, err := s.Recv()
		if err != nil {
			return st, fmt.Errorf("after %d of %d events: receive: %v", len(chk.seen), n, err)
		}
		if resp.WatchId != id || resp.Canceled || resp.Created || resp.CompactRevision != 0 || len(resp.Events) == 0 {
			return st, fmt.Errorf("after %d of %d events: unexpected response: watch id %d canceled %v created %v compact revision %d, %d events",
				len(chk.seen), n, resp.WatchId, resp.Canceled, resp.Created, resp.CompactRevision, len(resp.Events))
		}
		st.resps++
		st.maxEvents = max(st.maxEvents, len(resp.Events))
		st.maxBytes = max(st.maxBytes, proto.Size(resp))
		payload := 0
		for _, ev := range resp.Events {
			payload += len(ev.Kv.Value) + len(ev.PrevKv.GetValue())
			if err := chk.add((*clientv3.Event)(ev)); err != nil {
				return st, err
			}
		}
		st.maxPayload = max(st.maxPayload, payload)
	}
	return st, nil
}

// TestWatchSlowReader opens a raw Watch stream and does not read it while much data is
// written; writes must go on unhindered, and once the stream is read every event arrives in
// order, none missing or repeated. The first burst (about 30 MiB of values and as much of
// previous values) stays within the in-memory ring (watch.DefaultRingBytes, 64 MiB); the
// second (1 MiB values overwriting 1 MiB values, ~90 MiB of ring) overflows it, so the
// stalled watcher must be served from the revision history. A response whose events hold more
// bytes than the ring can is proof of that: the ring path answers from what the ring holds.
func TestWatchSlowReader(t *testing.T) {
	checkNoWatchLeaks(t)
	c := testcluster.New(t, 1, testcluster.Options{})
	m := c.Members[0]
	kv := m.Client() // writes go through their own connection
	k := keyer(t)

	s := rawWatchStream(t, m.Client(), 3*time.Minute)
	start := currentRev(t, kv) + 1
	id := rawCreated(t, s, &pb.WatchCreateRequest{Key: []byte(prefix(t)), RangeEnd: []byte(prefixEnd(prefix(t))), StartRevision: start, PrevKv: true})
	chk := newSeqChecker(start, true)
	log := &putLog{acked: map[int64][2]string{}}

	// Ring path: ~30 MiB while nothing reads the stream.
	const n1 = 3000
	began := time.Now()
	lat := putBurst(t, kv, k("a/"), n1, 10<<10, 101, 8, log)
	t.Logf("burst 1 (%d x 10 KiB, stream not read) in %v: %s", n1, time.Since(began), latencySummary(lat))
	st, err := rawReadSeq(s, id, chk, n1)
	if err != nil {
		t.Fatalf("stalled watcher, burst 1: %v", err)
	}
	t.Logf("burst 1 delivered in %v", st)
	if err := chk.checkAcked(log.acked); err != nil {
		t.Fatalf("burst 1: %v", err)
	}

	// Storage path: 50 values of 1 MiB overwriting 10 keys while the stream is not read.
	const n2 = 50
	began = time.Now()
	lat = putBurst(t, kv, k("b/"), n2, 1<<20, 10, 4, log)
	t.Logf("burst 2 (%d x 1 MiB, stream not read) in %v: %s", n2, time.Since(began), latencySummary(lat))
	st, err = rawReadSeq(s, id, chk, n1+n2)
	if err != nil {
		t.Fatalf("stalled watcher, burst 2: %v", err)
	}
	t.Logf("burst 2 delivered in %v", st)
	if err := chk.checkAcked(log.acked); err != nil {
		t.Fatalf("burst 2: %v", err)
	}
	if st.maxPayload > watch.DefaultRingBytes {
		t.Logf("burst 2: a response held %d bytes of values, more than the %d-byte ring: the stalled watcher was served from storage", st.maxPayload, watch.DefaultRingBytes)
	} else {
		t.Logf("burst 2: no response held more than the ring; could not prove the storage path was taken")
	}
}
