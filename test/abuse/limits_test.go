package abuse_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestRequestLimits checks the request and response limits an operator can rely on, with
// etcd's errors: too many operations in a txn, requests over --max-request-bytes and over the
// gRPC receive limit (also many at once), and range responses over the client's receive limit.
func TestRequestLimits(t *testing.T) {
	c, mws := newCluster(t, 1)
	m := c.Members[0]
	cli := newClient(t, clientv3.Config{}, m)
	big := newClient(t, clientv3.Config{MaxCallSendMsgSize: 8 << 20}, m)

	t.Run("TooManyOps", func(t *testing.T) {
		ops := func(n int) []clientv3.Op {
			var out []clientv3.Op
			for i := 0; i < n; i++ {
				out = append(out, clientv3.OpPut(fmt.Sprintf("/ops/%03d", i), "x"))
			}
			return out
		}
		if _, err := cli.Txn(ctx(t)).Then(ops(128)...).Commit(); err != nil {
			t.Fatalf("txn of --max-txn-ops (128) puts: %v", err)
		}
		_, err := cli.Txn(ctx(t)).Then(ops(129)...).Commit()
		if !testcluster.IsErr(err, rpctypes.ErrGRPCTooManyOps) {
			t.Fatalf("txn of 129 puts: got %v, want %v", err, rpctypes.ErrTooManyOps)
		}
		_, err = cli.Txn(ctx(t)).If(clientv3.Compare(clientv3.Version("/ops/000"), ">", 0)).Then(ops(100)...).Else(ops(29)...).Commit()
		if err != nil {
			t.Fatalf("txn of 100 + 29 puts in two branches: %v", err)
		}
		// Comparisons count too, as in etcd.
		var cmps []clientv3.Cmp
		for i := 0; i < 129; i++ {
			cmps = append(cmps, clientv3.Compare(clientv3.Version(fmt.Sprintf("/ops/%03d", i)), "<", 100))
		}
		_, err = cli.Txn(ctx(t)).If(cmps...).Commit()
		if !testcluster.IsErr(err, rpctypes.ErrGRPCTooManyOps) {
			t.Fatalf("txn of 129 comparisons: got %v, want %v", err, rpctypes.ErrTooManyOps)
		}
	})

	t.Run("OversizedRequestsAtOnce", func(t *testing.T) {
		// Many clients send requests over the gRPC receive limit and over --max-request-bytes
		// at the same time: each gets its error, the member's memory does not follow the sum.
		huge := strings.Repeat("h", 6<<20)
		over := strings.Repeat("o", maxRequestBytes+1)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := 0; i < pick(16, 64); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < pick(2, 16); j++ {
					_, err := big.Put(ctx(t), "/huge", huge)
					if testcluster.ErrCode(err) != codes.ResourceExhausted {
						errs <- fmt.Errorf("6 MiB put: got %v, want ResourceExhausted", err)
						return
					}
					_, err = big.Put(ctx(t), "/over", over)
					if !tooLarge(err) {
						errs <- fmt.Errorf("put over --max-request-bytes: got %v, want %v", err, rpctypes.ErrRequestTooLarge)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})

	t.Run("LargeRange", func(t *testing.T) {
		val := strings.Repeat("r", 1<<20)
		for i := 0; i < 12; i++ {
			if _, err := cli.Put(ctx(t), fmt.Sprintf("/range/%02d", i), val); err != nil {
				t.Fatalf("put: %v", err)
			}
		}
		// clientv3 accepts responses up to 2 GiB by default: the whole 12 MiB arrive.
		g, err := cli.Get(ctx(t), "/range/", clientv3.WithPrefix())
		if err != nil || len(g.Kvs) != 12 {
			t.Fatalf("12 MiB range: %v", err)
		}
		// A client that accepts 4 MiB gets ResourceExhausted, and can page with a limit.
		small := newClient(t, clientv3.Config{MaxCallRecvMsgSize: 4 << 20}, m)
		_, err = small.Get(ctx(t), "/range/", clientv3.WithPrefix())
		if testcluster.ErrCode(err) != codes.ResourceExhausted {
			t.Fatalf("12 MiB range through a 4 MiB client: got %v, want ResourceExhausted", err)
		}
		t.Logf("12 MiB range through a client limited to 4 MiB: %v", err)
		g, err = small.Get(ctx(t), "/range/", clientv3.WithPrefix(), clientv3.WithLimit(3))
		if err != nil || len(g.Kvs) != 3 || !g.More || g.Count != 12 {
			t.Fatalf("paged range: %v %v", g, err)
		}
	})
	mws[0].check(t)
}

// openFDs counts the member's open file descriptors.
func openFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, fmt.Errorf("list open files: %w", err)
	}
	return len(ents), nil
}

// TestGarbageConnections opens many connections to the client port that send garbage (random
// bytes, a valid HTTP/2 preface followed by garbage, a partial preface, bad HTTP/1) or nothing
// at all, many at a time, while a client keeps working: the member must stay up and serving,
// close what it cannot parse, and keep neither the connections nor their memory afterwards.
func TestGarbageConnections(t *testing.T) {
	c, mws := newCluster(t, 1)
	m := c.Members[0]
	u, err := url.Parse(m.ClientURL)
	if err != nil {
		t.Fatalf("client URL: %v", err)
	}
	cli := newClient(t, clientv3.Config{}, m)
	if _, err := cli.Put(ctx(t), "/garbage/before", "x"); err != nil {
		t.Fatalf("put: %v", err)
	}
	fds0, err := openFDs(mws[0].pid)
	if err != nil {
		t.Fatalf("%v", err)
	}
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	rng := rand.New(rand.NewPCG(1, 2))
	var rmu sync.Mutex
	random := func(n int) []byte {
		rmu.Lock()
		defer rmu.Unlock()
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	payloads := []func() []byte{
		func() []byte { return random(1 + rng.IntN(64<<10)) },
		func() []byte { return append([]byte(preface), random(1+rng.IntN(64<<10))...) },
		// A SETTINGS frame header announcing a 16 MiB payload that never comes.
		func() []byte { return append([]byte(preface), 0xff, 0xff, 0xff, 0x04, 0, 0, 0, 0, 0) },
		func() []byte { return []byte(preface[:10]) },
		func() []byte { return []byte("GET / HTTP/1.1\r\nHost: " + strings.Repeat("x", 8<<10) + "\r\n\r\n") },
		func() []byte { return append(bytes.Repeat([]byte{0}, 4096), "\r\n\r\n"...) },
		func() []byte { return nil },
	}

	// Idle connections that send nothing, held open while the garbage flows.
	var idle []net.Conn
	for i := 0; i < pick(100, 2000); i++ {
		conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		idle = append(idle, conn)
	}
	t.Cleanup(func() {
		for _, conn := range idle {
			_ = conn.Close()
		}
	})

	total, parallel := pick(400, 10000), 100
	var wg sync.WaitGroup
	work := make(chan int)
	began := time.Now()
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
				if err != nil {
					continue
				}
				_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
				_, _ = conn.Write(payloads[i%len(payloads)]())
				// Read what the member answers until it closes the connection, or give up:
				// either way the connection is closed from this side too.
				_, _ = io.Copy(io.Discard, conn)
				_ = conn.Close()
			}
		}()
	}
	for i := 0; i < total; i++ {
		work <- i
		if i%200 == 0 {
			cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			_, err := cli.Put(cctx, "/garbage/during", fmt.Sprint(i))
			cancel()
			if err != nil {
				t.Fatalf("put while garbage flows: %v", err)
			}
		}
	}
	close(work)
	wg.Wait()
	fdsMid, _ := openFDs(mws[0].pid)
	for _, conn := range idle {
		_ = conn.Close()
	}
	t.Logf("%d garbage connections (%d at a time) with %d idle ones held open in %v; member files open: %d before, %d with the idle connections",
		total, parallel, len(idle), time.Since(began).Round(time.Millisecond), fds0, fdsMid)
	// Every connection is let go.
	waitFor(t, 30*time.Second, "garbage connections closed", func() (bool, error) {
		n, err := openFDs(mws[0].pid)
		if err != nil {
			return false, err
		}
		if n > fds0+5 {
			return false, fmt.Errorf("%d files open, %d before", n, fds0)
		}
		return true, nil
	})
	mws[0].check(t)
}
