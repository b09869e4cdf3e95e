package abuse_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// writeLoop puts small values until stop is closed, recording the latencies; it reports the
// first error.
func writeLoop(cli *clientv3.Client, key string, stop <-chan struct{}, lat *latencies) <-chan error {
	done := make(chan error, 1)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			start := time.Now()
			_, err := cli.Put(cctx, key, fmt.Sprint(i))
			cancel()
			if err != nil {
				done <- fmt.Errorf("writer: put: %w", err)
				return
			}
			lat.add(time.Since(start))
		}
	}()
	return done
}

// baselineLatency measures n puts on an idle member.
func baselineLatency(t *testing.T, cli *clientv3.Client, n int) *latencies {
	t.Helper()
	var lat latencies
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := cli.Put(ctx(t), "/baseline", fmt.Sprint(i)); err != nil {
			t.Fatalf("put: %v", err)
		}
		lat.add(time.Since(start))
	}
	return &lat
}

// waitNoLeases waits until the member holds no lease and no key under prefix.
func waitNoLeases(t *testing.T, cli *clientv3.Client, prefix string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "every lease revoked", func() (bool, error) {
		ls, err := cli.Leases(ctx(t))
		if err != nil {
			return false, err
		}
		g, err := cli.Get(ctx(t), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return false, err
		}
		if len(ls.Leases) != 0 || g.Count != 0 {
			return false, fmt.Errorf("%d leases and %d attached keys left", len(ls.Leases), g.Count)
		}
		return true, nil
	})
}

// TestLeaseGrantStorm grants many short leases from many clients at once, some with a key
// attached, while a writer goes on: grants succeed or fail with a clear error, the writer keeps
// its latency order, every lease expires and is revoked with its keys, and the member stays
// within its memory.
func TestLeaseGrantStorm(t *testing.T) {
	c, mws := newCluster(t, 1)
	m := c.Members[0]
	grants := pick(3000, 200000)
	workers := pick(32, 128)
	var clients []*clientv3.Client
	for i := 0; i < pick(8, 32); i++ {
		clients = append(clients, newClient(t, clientv3.Config{}, m))
	}
	writer := newClient(t, clientv3.Config{}, m)
	before := baselineLatency(t, writer, 50)

	stop := make(chan struct{})
	var during latencies
	wdone := writeLoop(writer, "/storm-writer", stop, &during)
	var next, granted, attached atomic.Int64
	var grantLat latencies
	var overload errCounts
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	began := time.Now()
	for w := 0; w < workers; w++ {
		cli := clients[w%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(grants); i = next.Add(1) {
				cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				start := time.Now()
				l, err := cli.Grant(cctx, 2)
				if err == nil {
					grantLat.add(time.Since(start))
					granted.Add(1)
					if i%100 == 0 {
						_, err = cli.Put(cctx, fmt.Sprintf("/leased/%x", l.ID), "x", clientv3.WithLease(l.ID))
						if err == nil {
							attached.Add(1)
						}
					}
				}
				cancel()
				switch {
				case err == nil:
				case overloadErr(err):
					overload.add(err)
				default:
					errs <- fmt.Errorf("grant %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		t.Fatalf("%v", err)
	}
	if err := <-wdone; err != nil {
		t.Fatalf("%v", err)
	}
	elapsed := time.Since(began)
	t.Logf("%d grants (%d with a key) by %d workers in %v (%.0f/s): grant latency %v; overload errors: %v; put latency before %v, during %v",
		granted.Load(), attached.Load(), workers, elapsed.Round(time.Millisecond), float64(granted.Load())/elapsed.Seconds(), &grantLat, &overload, before, &during)
	checkLatency(t, before, &during)
	if granted.Load() < int64(grants)*9/10 {
		t.Fatalf("only %d of %d grants succeeded", granted.Load(), grants)
	}

	// Every lease expires and is revoked, its key with it (revocation runs at 1,000 a second).
	began = time.Now()
	waitNoLeases(t, writer, "/leased/", time.Duration(grants/1000)*time.Second+30*time.Second)
	t.Logf("every lease revoked %v after the storm", time.Since(began).Round(time.Millisecond))
	mws[0].check(t)
}

// TestKeepAliveStorm keeps leases alive from many streams sending keep-alives as fast as they
// can, some of them never reading the answers: the leases stay alive while the storm lasts,
// expire once it ends, writes go on, and the member stays within its memory.
func TestKeepAliveStorm(t *testing.T) {
	c, mws := newCluster(t, 1)
	m := c.Members[0]
	nLeases := pick(200, 2000)
	streams := pick(16, 64)
	stormFor := pick(4*time.Second, 30*time.Second)
	const ttl = 3
	cli := newClient(t, clientv3.Config{}, m)
	var ids []int64
	for i := 0; i < nLeases; i++ {
		l, err := cli.Grant(ctx(t), ttl)
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		ids = append(ids, int64(l.ID))
		if i%10 == 0 {
			if _, err := cli.Put(ctx(t), fmt.Sprintf("/kept/%x", l.ID), "x", clientv3.WithLease(l.ID)); err != nil {
				t.Fatalf("put: %v", err)
			}
		}
	}
	writer := newClient(t, clientv3.Config{}, m)
	before := baselineLatency(t, writer, 50)

	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sent, answered atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		conn := newClient(t, clientv3.Config{}, m)
		s, err := pb.NewLeaseClient(conn.ActiveConnection()).LeaseKeepAlive(sctx)
		if err != nil {
			t.Fatalf("open keep-alive stream: %v", err)
		}
		reads := i%4 != 0 // every fourth stream never reads its answers
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bursts of 20 every 10 ms: 2,000 keep-alives a second per stream (a client
			// library sends one per lease every TTL/3). Unpaced, the senders would take every
			// core of the test process and starve the writer measured below.
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for j := 0; ; {
				for k := 0; k < 20; k, j = k+1, j+1 {
					if err := s.Send(&pb.LeaseKeepAliveRequest{ID: ids[(i+j)%len(ids)]}); err != nil {
						return
					}
					sent.Add(1)
				}
				select {
				case <-tick.C:
				case <-sctx.Done():
					return
				}
			}
		}()
		if reads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					resp, err := s.Recv()
					if err != nil {
						return
					}
					if resp.TTL != ttl {
						t.Errorf("keep-alive answer %v, want TTL %d", resp, ttl)
					}
					answered.Add(1)
				}
			}()
		}
	}
	stop := make(chan struct{})
	var during latencies
	wdone := writeLoop(writer, "/keepalive-writer", stop, &during)
	storm := time.NewTimer(stormFor)
	select {
	case <-storm.C:
	case err := <-wdone:
		t.Fatalf("%v", err)
	}
	// While the storm lasts (longer than the TTL), every lease is alive.
	ls, err := cli.Leases(ctx(t))
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	if len(ls.Leases) != nLeases {
		t.Fatalf("%d of %d leases alive during the keep-alive storm", len(ls.Leases), nLeases)
	}
	close(stop)
	if err := <-wdone; err != nil {
		t.Fatalf("%v", err)
	}
	peakStorm, _ := mws[0].peak()
	cancel()
	wg.Wait()
	t.Logf("%d streams (%d never reading) for %v on %d leases: %d keep-alives sent, %d answered; put latency before %v, during %v; peak RSS %s",
		streams, (streams+3)/4, stormFor, nLeases, sent.Load(), answered.Load(), before, &during, mib(peakStorm))
	checkLatency(t, before, &during)
	// Once the storm is over the leases expire.
	waitNoLeases(t, cli, "/kept/", 30*time.Second)
	mws[0].check(t)
}
