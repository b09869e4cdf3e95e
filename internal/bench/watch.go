package bench

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchOptions describe a watch fan-out run: Watchers watchers on one prefix, spread over
// Streams gRPC streams, while one writer puts Rate keys per second for Duration.
type WatchOptions struct {
	Endpoints []string
	Watchers  int
	Streams   int
	Rate      int
	Duration  time.Duration
	ValSize   int
}

// WatchResult holds the delivery latencies (put sent → event received, every watcher) and the
// writer's put latencies.
type WatchResult struct {
	Puts       int
	Events     int64
	Missing    int64
	Delivery   Result
	PutLatency Result
}

// RunWatch performs a watch fan-out run.
func RunWatch(ctx context.Context, o WatchOptions) (WatchResult, error) {
	if o.Watchers < 1 || o.Streams < 1 || o.Rate < 1 {
		return WatchResult{}, fmt.Errorf("watchers, streams and rate must be positive")
	}
	prefix := fmt.Sprintf("/bench-watch/%d/", time.Now().UnixNano())
	writer, err := newClient(o.Endpoints)
	if err != nil {
		return WatchResult{}, err
	}
	defer writer.Close()
	// One client per stream: clientv3 multiplexes every watcher of a client (with the same
	// context metadata) on one gRPC stream.
	clients := make([]*clientv3.Client, o.Streams)
	for i := range clients {
		c, err := newClient(o.Endpoints)
		if err != nil {
			return WatchResult{}, err
		}
		defer c.Close()
		clients[i] = c
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var (
		mu        sync.Mutex
		delivery  []time.Duration
		events    atomic.Int64
		wg        sync.WaitGroup
		createdWG sync.WaitGroup
	)
	total := int(o.Duration.Seconds() * float64(o.Rate))
	for i := 0; i < o.Watchers; i++ {
		wch := clients[i%len(clients)].Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		createdWG.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			created := false
			var local []time.Duration
			seen := 0
			for resp := range wch {
				if resp.Created && !created {
					created = true
					createdWG.Done()
				}
				now := time.Since(start)
				for _, ev := range resp.Events {
					if len(ev.Kv.Value) >= 8 {
						sent := time.Duration(binary.BigEndian.Uint64(ev.Kv.Value))
						local = append(local, now-sent)
					}
					seen++
				}
				if seen >= total {
					break
				}
			}
			if !created {
				createdWG.Done()
			}
			events.Add(int64(seen))
			mu.Lock()
			delivery = append(delivery, local...)
			mu.Unlock()
		}()
	}
	createdWG.Wait()
	val := make([]byte, max(o.ValSize, 8))
	interval := time.Second / time.Duration(o.Rate)
	ticker := time.NewTicker(interval)
	var putLat []time.Duration
	puts := 0
	for i := 0; i < total; i++ {
		select {
		case <-ticker.C:
		case <-ctx.Done():
			ticker.Stop()
			return WatchResult{}, ctx.Err()
		}
		binary.BigEndian.PutUint64(val, uint64(time.Since(start)))
		t0 := time.Now()
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := writer.Put(pctx, fmt.Sprintf("%s%08d", prefix, i), string(val))
		pcancel()
		if err != nil {
			ticker.Stop()
			return WatchResult{}, fmt.Errorf("put: %w", err)
		}
		putLat = append(putLat, time.Since(t0))
		puts++
	}
	ticker.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cancel()
		<-done
	}
	sort.Slice(delivery, func(i, j int) bool { return delivery[i] < delivery[j] })
	sort.Slice(putLat, func(i, j int) bool { return putLat[i] < putLat[j] })
	res := WatchResult{
		Puts:       puts,
		Events:     events.Load(),
		Missing:    int64(puts)*int64(o.Watchers) - events.Load(),
		Delivery:   Result{Requests: len(delivery), Latencies: delivery, Elapsed: time.Since(start)},
		PutLatency: Result{Requests: len(putLat), Latencies: putLat, Elapsed: time.Since(start)},
	}
	return res, nil
}

// mainWatch runs "ordo bench watch".
func mainWatch(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ordo bench watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := fs.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints")
	o := WatchOptions{}
	fs.IntVar(&o.Watchers, "watchers", 10000, "watchers on one prefix")
	fs.IntVar(&o.Streams, "streams", 100, "gRPC watch streams the watchers share")
	fs.IntVar(&o.Rate, "rate", 1000, "puts per second")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long the writer runs")
	fs.IntVar(&o.ValSize, "val-size", 64, "value size in bytes (at least 8)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Endpoints = strings.Split(*endpoints, ",")
	res, err := RunWatch(context.Background(), o)
	if err != nil {
		fmt.Fprintln(stderr, "ordo bench watch:", err)
		return 1
	}
	fmt.Fprintf(stdout, "watch: %d watchers over %d streams, %d puts/s for %v\n", o.Watchers, o.Streams, o.Rate, o.Duration)
	fmt.Fprintf(stdout, "puts: %d  events delivered: %d  missing: %d\n", res.Puts, res.Events, res.Missing)
	fmt.Fprintf(stdout, "delivery latency p50: %v  p99: %v  max: %v\n", res.Delivery.Percentile(50).Round(time.Microsecond),
		res.Delivery.Percentile(99).Round(time.Microsecond), res.Delivery.Percentile(100).Round(time.Microsecond))
	fmt.Fprintf(stdout, "put latency p50: %v  p99: %v  max: %v\n", res.PutLatency.Percentile(50).Round(time.Microsecond),
		res.PutLatency.Percentile(99).Round(time.Microsecond), res.PutLatency.Percentile(100).Round(time.Microsecond))
	if res.Missing != 0 {
		return 1
	}
	return 0
}
