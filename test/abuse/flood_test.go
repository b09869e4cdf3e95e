package abuse_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// maxRequestBytes is the default --max-request-bytes (1.5 MiB), as in etcd.
const maxRequestBytes = 1572864

// overloadErr reports whether err is one of the clear errors a member under overload may
// answer with: a timeout, a deadline, or a refusal for lack of resources.
func overloadErr(err error) bool {
	switch testcluster.ErrCode(err) {
	case codes.ResourceExhausted, codes.DeadlineExceeded:
		return true
	}
	return testcluster.IsErr(err, rpctypes.ErrGRPCTimeout) || testcluster.IsErr(err, rpctypes.ErrGRPCRequestTooManyRequests) ||
		errors.Is(err, context.DeadlineExceeded)
}

// tooLarge reports whether err is etcd's "request is too large".
func tooLarge(err error) bool {
	return testcluster.IsErr(err, rpctypes.ErrGRPCRequestTooLarge) && rpctypes.ErrorDesc(err) == "etcdserver: request is too large"
}

func TestLargeValueFlood(t *testing.T) {
	t.Run("1member", func(t *testing.T) { testLargeValueFlood(t, 1, pick[int64](48<<20, 8<<30)) })
	t.Run("3members", func(t *testing.T) { testLargeValueFlood(t, 3, pick[int64](24<<20, 4<<30)) })
}

// testLargeValueFlood has many clients put values near --max-request-bytes, values just over
// it and transactions of many large puts onto a few keys until total bytes were accepted,
// compacting as it goes. Every request must succeed or fail with a clear error; oversized ones
// must fail with "request is too large"; every member must stay within its memory.
func testLargeValueFlood(t *testing.T, members int, total int64) {
	c, mws := newCluster(t, members)
	writers := pick(16, 64)
	const keys = 8
	var clients []*clientv3.Client
	for i := 0; i < writers/4; i++ {
		// Clients send up to 4 MiB, so requests over --max-request-bytes reach the server.
		clients = append(clients, newClient(t, clientv3.Config{MaxCallSendMsgSize: 4 << 20}, c.Members[i%members]))
	}
	near := strings.Repeat("n", maxRequestBytes-8<<10)
	over := strings.Repeat("o", maxRequestBytes+64<<10)
	quarter := strings.Repeat("q", maxRequestBytes/4-8<<10)
	// Two of these make a txn just over --max-request-bytes, yet below the gRPC limit.
	half := strings.Repeat("h", maxRequestBytes/2+16<<10)

	var accepted, puts, txns, rejected atomic.Int64
	var lat latencies
	var overload errCounts
	ctxAll, cancel := context.WithTimeout(context.Background(), pick(2*time.Minute, 20*time.Minute))
	defer cancel()
	began := time.Now()
	var wg sync.WaitGroup
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		cancel()
	}
	for w := 0; w < writers; w++ {
		cli := clients[w%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; accepted.Load() < total && ctxAll.Err() == nil; i++ {
				key := fmt.Sprintf("/flood/%d", (w+i)%keys)
				cctx, ccancel := context.WithTimeout(ctxAll, 10*time.Second)
				start := time.Now()
				var err error
				var size int64
				wantTooLarge := false
				switch (w + i) % 8 { // every writer mixes the kinds of requests from its first one
				case 5: // just over the limit
					_, err = cli.Put(cctx, key, over)
					wantTooLarge = true
				case 6: // a txn of four large puts, within the limit
					_, err = cli.Txn(cctx).Then(
						clientv3.OpPut(key, quarter), clientv3.OpPut(key+"/a", quarter),
						clientv3.OpPut(key+"/b", quarter), clientv3.OpPut(key+"/c", quarter)).Commit()
					size = 4 * int64(len(quarter))
					txns.Add(1)
				case 7: // a txn of large puts over the limit
					_, err = cli.Txn(cctx).Then(clientv3.OpPut(key, half), clientv3.OpPut(key+"/a", half)).Commit()
					wantTooLarge = true
				default:
					_, err = cli.Put(cctx, key, near)
					size = int64(len(near))
					puts.Add(1)
				}
				d := time.Since(start)
				ccancel()
				switch {
				case ctxAll.Err() != nil:
					return
				case wantTooLarge && tooLarge(err):
					rejected.Add(1)
				case wantTooLarge:
					fail("oversized request: got %v (code %v), want %q", err, testcluster.ErrCode(err), rpctypes.ErrRequestTooLarge)
					return
				case err == nil:
					accepted.Add(size)
					lat.add(d)
				case overloadErr(err):
					overload.add(err)
				default:
					fail("request of %d bytes: unexpected error %v (code %v)", size, err, testcluster.ErrCode(err))
					return
				}
			}
		}()
	}
	// Compact as the flood goes, so that the store holds little more than the current values.
	compacted := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		cli := clients[0]
		for {
			select {
			case <-ctxAll.Done():
				return
			case <-tick.C:
			}
			if accepted.Load() >= total {
				return
			}
			cctx, ccancel := context.WithTimeout(ctxAll, 10*time.Second)
			g, err := cli.Get(cctx, "/flood/0", clientv3.WithCountOnly())
			if err == nil {
				_, err = cli.Compact(cctx, g.Header.Revision)
			}
			ccancel()
			switch {
			case err == nil:
				compacted++
			case ctxAll.Err() != nil:
				return
			case testcluster.IsErr(err, rpctypes.ErrGRPCCompacted) || overloadErr(err):
			default:
				fail("compact: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if accepted.Load() < total {
		t.Fatalf("only %s of %s accepted before the deadline", mib(accepted.Load()), mib(total))
	}
	elapsed := time.Since(began)
	t.Logf("%d members, %d writers: %s accepted in %v (%.0f MiB/s): %d puts, %d txns, %d oversized requests refused, %d compactions; accepted latency %v; overload errors: %v",
		members, writers, mib(accepted.Load()), elapsed.Round(time.Millisecond), float64(accepted.Load())/(1<<20)/elapsed.Seconds(),
		puts.Load(), txns.Load(), rejected.Load(), compacted, &lat, &overload)

	// The stored values are whole.
	g, err := clients[0].Get(ctx(t), "/flood/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	for _, kv := range g.Kvs {
		if v := string(kv.Value); v != near && v != quarter {
			t.Fatalf("key %s holds %d bytes, not one of the values written", kv.Key, len(v))
		}
	}
	for _, w := range mws {
		w.check(t)
	}
}
