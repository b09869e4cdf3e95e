package server_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// dialRaw opens a plain TCP connection to a member's client port; it is closed when the test
// ends.
func dialRaw(t testing.TB, m *testcluster.Member) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", hostPort(m), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", m.ClientURL, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// sendGarbage writes payload on a fresh connection and reports whether the member closed the
// connection (EOF or reset) within timeout.
func sendGarbage(t testing.TB, m *testcluster.Member, payload []byte, timeout time.Duration) (closed bool, reply []byte) {
	t.Helper()
	conn := dialRaw(t, m)
	_ = conn.SetDeadline(time.Now().Add(timeout))
	_, _ = conn.Write(payload) // the member may close the connection before reading it all
	var buf bytes.Buffer
	_, err := io.Copy(&buf, conn)
	var ne net.Error
	timedOut := errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
	_ = conn.Close()
	return !timedOut, buf.Bytes()
}

func testGarbage(t *testing.T, c *testcluster.Cluster) {
	rng := rand.New(rand.NewSource(1))
	random := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

	for i, m := range c.Members {
		t.Run(fmt.Sprintf("member%d", i), func(t *testing.T) {
			k := keyer(t)
			mc := m.Client()
			checkAlive(t, mc, k("before"))

			// A connection that never sends anything stays open while the others run.
			idle := dialRaw(t, m)
			_ = idle

			for _, tc := range []struct {
				name    string
				payload []byte
			}{
				// Ends with an empty line so an HTTP/1 parser sees a complete (bad) request.
				{"random bytes", append(random(4096), "\r\n\r\n"...)},
				{"random megabyte", append(random(1<<20), "\r\n\r\n"...)},
				// A valid HTTP/2 preface followed by a frame header announcing a 16 MiB frame.
				{"http2 preface then garbage", append([]byte(preface), bytes.Repeat([]byte{0xff}, 4096)...)},
				// Diverges from the preface after a few bytes.
				{"partial preface", []byte("PRI * HTTP/1.1\r\n\r\n\x00\x01\x02garbage\r\n\r\n")},
				{"bad http1 request", []byte("BREW /pot HTCPCP/1.0\r\nAccept-Additions: milk\r\n\r\n")},
				{"zeros", append(make([]byte, 8192), "\r\n\r\n"...)},
			} {
				closed, reply := sendGarbage(t, m, tc.payload, 15*time.Second)
				if !closed {
					t.Errorf("%s: the member kept the connection open for 15s (reply %q)", tc.name, truncate(reply))
				}
			}
			// A connection closed at once.
			dialRaw(t, m).Close()

			// Many garbage connections at the same time.
			var wg sync.WaitGroup
			for j := 0; j < 32; j++ {
				payload := append(random(512), "\r\n\r\n"...)
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, err := net.DialTimeout("tcp", hostPort(m), 5*time.Second)
					if err != nil {
						return
					}
					defer conn.Close()
					_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
					_, _ = conn.Write(payload)
					_, _ = io.Copy(io.Discard, conn)
				}()
			}
			wg.Wait()

			// The member still serves gRPC on existing and new connections...
			checkAlive(t, mc, k("after"))
			checkAlive(t, m.Client(), k("after-new-client"))
			checkAlive(t, c.Client(), k("after-cluster-client"))
			// ...and HTTP/1 on the same port.
			conn := dialRaw(t, m)
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write([]byte("GET /health HTTP/1.1\r\nHost: ordo\r\nConnection: close\r\n\r\n")); err != nil {
				t.Fatalf("write health request: %v", err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("read health response: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
				t.Fatalf("health after garbage: %d %s", resp.StatusCode, body)
			}
		})
	}
}
