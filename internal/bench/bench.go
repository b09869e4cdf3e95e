// Package bench is Ordo's load generator ("ordo bench"): it drives any etcd-API cluster with
// etcd's own client and reports throughput and latency percentiles, so the same command
// measures Ordo and etcd alike.
package bench

import (
	"context"
	"crypto/rand"
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
	"go.uber.org/zap"
)

// Options describe one load run.
type Options struct {
	Endpoints []string
	Op        string // "put" or "get"
	Clients   int    // concurrent requesters
	Conns     int    // gRPC connections they share
	Total     int    // requests in all
	KeySize   int
	ValSize   int
	KeySpace  int  // distinct keys; requests pick them in sequence
	Serial    bool // get: serializable reads
	Timeout   time.Duration
}

// Result summarises a run.
type Result struct {
	Requests  int
	Errors    int
	Elapsed   time.Duration
	Latencies []time.Duration // sorted
}

// Throughput is completed requests per second.
func (r Result) Throughput() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// Percentile returns the p-th (0-100) latency.
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.Latencies)-1) * p / 100)
	return r.Latencies[i]
}

// String renders the result as a short report.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "requests: %d  errors: %d  elapsed: %v\n", r.Requests, r.Errors, r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "throughput: %.0f req/s\n", r.Throughput())
	fmt.Fprintf(&b, "latency p50: %v  p90: %v  p99: %v  p99.9: %v  max: %v\n",
		r.Percentile(50).Round(time.Microsecond), r.Percentile(90).Round(time.Microsecond),
		r.Percentile(99).Round(time.Microsecond), r.Percentile(99.9).Round(time.Microsecond),
		r.Percentile(100).Round(time.Microsecond))
	return b.String()
}

// newClient connects etcd's client to endpoints, quietly.
func newClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// Run performs the load described by o.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Clients < 1 || o.Conns < 1 || o.Total < 1 {
		return Result{}, fmt.Errorf("clients, conns and total must be positive")
	}
	clients := make([]*clientv3.Client, o.Conns)
	for i := range clients {
		c, err := newClient(o.Endpoints)
		if err != nil {
			return Result{}, fmt.Errorf("connect: %w", err)
		}
		defer c.Close()
		clients[i] = c
	}
	val := make([]byte, o.ValSize)
	if _, err := rand.Read(val); err != nil {
		return Result{}, err
	}
	value := string(val)
	keySpace := max(o.KeySpace, 1)
	var next atomic.Int64
	var errs atomic.Int64
	lat := make([][]time.Duration, o.Clients)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < o.Clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cli := clients[w%len(clients)]
			key := make([]byte, max(o.KeySize, 8))
			for {
				n := next.Add(1) - 1
				if n >= int64(o.Total) || ctx.Err() != nil {
					return
				}
				binary.BigEndian.PutUint64(key[len(key)-8:], uint64(n%int64(keySpace)))
				rctx, cancel := context.WithTimeout(ctx, o.Timeout)
				t0 := time.Now()
				var err error
				switch o.Op {
				case "get":
					var opts []clientv3.OpOption
					if o.Serial {
						opts = append(opts, clientv3.WithSerializable())
					}
					_, err = cli.Get(rctx, string(key), opts...)
				default:
					_, err = cli.Put(rctx, string(key), value)
				}
				d := time.Since(t0)
				cancel()
				if err != nil {
					errs.Add(1)
					continue
				}
				lat[w] = append(lat[w], d)
			}
		}()
	}
	wg.Wait()
	res := Result{Elapsed: time.Since(start), Errors: int(errs.Load())}
	for _, l := range lat {
		res.Latencies = append(res.Latencies, l...)
	}
	sort.Slice(res.Latencies, func(i, j int) bool { return res.Latencies[i] < res.Latencies[j] })
	res.Requests = len(res.Latencies)
	return res, nil
}

// Main runs "ordo bench" with args (after the subcommand name).
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ordo bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := fs.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints")
	o := Options{}
	fs.IntVar(&o.Clients, "clients", 1, "concurrent requesters")
	fs.IntVar(&o.Conns, "conns", 1, "gRPC connections shared by the requesters")
	fs.IntVar(&o.Total, "total", 10000, "requests in all")
	fs.IntVar(&o.KeySize, "key-size", 8, "key size in bytes (at least 8)")
	fs.IntVar(&o.ValSize, "val-size", 256, "value size in bytes")
	fs.IntVar(&o.KeySpace, "key-space", 100000, "distinct keys")
	fs.BoolVar(&o.Serial, "serializable", false, "get: serializable reads")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ordo bench put|get [flags]  (or: ordo bench watch|lease [flags])")
		fs.PrintDefaults()
	}
	if len(args) > 0 && args[0] == "watch" {
		return mainWatch(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "lease" {
		return mainLease(args[1:], stdout, stderr)
	}
	if len(args) == 0 || (args[0] != "put" && args[0] != "get") {
		fs.Usage()
		return 2
	}
	o.Op = args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	o.Endpoints = strings.Split(*endpoints, ",")
	res, err := Run(context.Background(), o)
	if err != nil {
		fmt.Fprintln(stderr, "ordo bench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s %d clients over %d connections, %d-byte values\n", o.Op, o.Clients, o.Conns, o.ValSize)
	fmt.Fprint(stdout, res)
	if res.Errors > 0 {
		return 1
	}
	return 0
}
