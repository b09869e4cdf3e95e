package bench

import (
	"context"
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

// LeaseOptions describe a lease run: Leases leases with TTL seconds, each with one attached
// key. With KeepAlive the leases are kept alive for Duration; otherwise they are left to expire
// all at once while a writer puts continuously, and the run reports how long the revocations
// took after the deadline and the writer's latency meanwhile.
type LeaseOptions struct {
	Endpoints []string
	Leases    int
	TTL       int64
	KeepAlive bool
	Duration  time.Duration
}

// mainLease runs "ordo bench lease".
func mainLease(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ordo bench lease", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := fs.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints")
	o := LeaseOptions{}
	fs.IntVar(&o.Leases, "leases", 10000, "leases to grant, each with one attached key")
	fs.Int64Var(&o.TTL, "ttl", 10, "lease TTL in seconds")
	fs.BoolVar(&o.KeepAlive, "keep-alive", false, "keep every lease alive for --duration instead of letting them expire")
	fs.DurationVar(&o.Duration, "duration", 30*time.Second, "keep-alive: how long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Endpoints = strings.Split(*endpoints, ",")
	if err := runLease(context.Background(), o, stdout); err != nil {
		fmt.Fprintln(stderr, "ordo bench lease:", err)
		return 1
	}
	return 0
}

func runLease(ctx context.Context, o LeaseOptions, out io.Writer) error {
	cli, err := newClient(o.Endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	prefix := fmt.Sprintf("/bench-lease/%d/", time.Now().UnixNano())
	ids := make([]clientv3.LeaseID, o.Leases)
	// Keep-alives start right after each grant, so no lease expires while the rest are granted.
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	var renewals atomic.Int64
	keepAlive := func(id clientv3.LeaseID) error {
		ch, err := cli.KeepAlive(kctx, id)
		if err != nil {
			return err
		}
		go func() {
			for range ch {
				renewals.Add(1)
			}
		}()
		return nil
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= o.Leases {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				l, err := cli.Grant(rctx, o.TTL)
				if err == nil {
					ids[i] = l.ID
					_, err = cli.Put(rctx, fmt.Sprintf("%s%08d", prefix, i), "x", clientv3.WithLease(l.ID))
				}
				if err == nil && o.KeepAlive {
					err = keepAlive(l.ID)
				}
				cancel()
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	granted := time.Now()
	fmt.Fprintf(out, "granted %d leases (TTL %ds) with one key each in %v\n", o.Leases, o.TTL, granted.Sub(start).Round(time.Millisecond))

	if o.KeepAlive {
		timer := time.NewTimer(o.Duration)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		defer rcancel()
		resp, err := cli.Get(rctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "kept alive for %v more: %d keep-alive responses in all; keys still present: %d of %d\n", o.Duration, renewals.Load(), resp.Count, o.Leases)
		return nil
	}

	// Expiry: a writer runs while every lease expires at about the same moment.
	deadline := granted.Add(time.Duration(o.TTL) * time.Second)
	wctx, stopWriter := context.WithCancel(ctx)
	var lat []time.Duration
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; wctx.Err() == nil; i++ {
			t0 := time.Now()
			rctx, cancel := context.WithTimeout(wctx, 10*time.Second)
			_, err := cli.Put(rctx, fmt.Sprintf("%swriter", prefix), "v")
			cancel()
			if err == nil {
				lat = append(lat, time.Since(t0))
			}
		}
	}()
	var gone time.Time
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cli.Get(rctx, prefix+"0", clientv3.WithRange(prefix+"1"), clientv3.WithCountOnly())
		cancel()
		if err == nil && resp.Count == 0 {
			gone = time.Now()
			break
		}
		if time.Since(deadline) > 5*time.Minute {
			stopWriter()
			<-writerDone
			return fmt.Errorf("keys still present 5 minutes after the deadline")
		}
		time.Sleep(20 * time.Millisecond) // polling interval of the measurement, not a test wait
	}
	stopWriter()
	<-writerDone
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r := Result{Latencies: lat}
	fmt.Fprintf(out, "all %d keys gone %v after the nominal deadline (TTL counted from the last grant)\n", o.Leases, gone.Sub(deadline).Round(time.Millisecond))
	fmt.Fprintf(out, "writer during expiry: %d puts, p50 %v, p99 %v, max %v\n", len(lat), r.Percentile(50).Round(time.Microsecond), r.Percentile(99).Round(time.Microsecond), r.Percentile(100).Round(time.Microsecond))
	return nil
}
