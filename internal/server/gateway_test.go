package server_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/config"
	"github.com/ordo-db/ordo/internal/server"
	"github.com/ordo-db/ordo/internal/testcluster"
)

// gwPost sends body to the JSON gateway path on member m and returns the status and the
// decoded JSON answer.
func gwPost(t testing.TB, m *testcluster.Member, path, body string) (int, map[string]any) {
	t.Helper()
	status, b := httpDo(t, http.MethodPost, m.ClientURL+path, body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("POST %s: answer is not a JSON object: %v: %q", path, err, b)
	}
	return status, out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestGateway checks the JSON gateway under /v3/ on every member: writes through it are seen
// by gRPC clients and the other way round, errors carry etcd's gRPC code, message and HTTP
// status, and watches stream over HTTP. compat/difftest TestGatewayDifferential compares the
// same answers with etcd's, byte for byte after normalisation.
func TestGateway(t *testing.T) {
	forEachClusterSize(t, func(t *testing.T, c *testcluster.Cluster) {
		k := keyer(t)
		cli := c.Client()
		last := c.Members[len(c.Members)-1]

		t.Run("PutThroughGatewayGetThroughGRPC", func(t *testing.T) {
			status, out := gwPost(t, c.Members[0], "/v3/kv/put", fmt.Sprintf(`{"key":%q,"value":%q}`, b64(k("a")), b64("1")))
			if status != http.StatusOK {
				t.Fatalf("put: %d %v", status, out)
			}
			rev := out["header"].(map[string]any)["revision"]
			kv := getOne(t, cli, k("a"))
			if string(kv.Value) != "1" || fmt.Sprint(kv.ModRevision) != rev {
				t.Fatalf("gRPC get after a gateway put at revision %v: %q at %d", rev, kv.Value, kv.ModRevision)
			}
		})

		t.Run("PutThroughGRPCRangeThroughGateway", func(t *testing.T) {
			p := mustPut(t, cli, k("b"), "2")
			status, out := gwPost(t, last, "/v3/kv/range", fmt.Sprintf(`{"key":%q}`, b64(k("b"))))
			if status != http.StatusOK {
				t.Fatalf("range: %d %v", status, out)
			}
			kvs, _ := out["kvs"].([]any)
			if len(kvs) != 1 || out["count"] != "1" {
				t.Fatalf("range through %s: %v", last.Name, out)
			}
			kv := kvs[0].(map[string]any)
			if kv["value"] != b64("2") || kv["mod_revision"] != fmt.Sprint(p.Header.Revision) {
				t.Fatalf("range through %s: %v, want value %q at %d", last.Name, kv, b64("2"), p.Header.Revision)
			}
		})

		t.Run("Errors", func(t *testing.T) {
			for _, tc := range []struct {
				path, body string
				status     int
				code       float64
				message    string
			}{
				{"/v3/kv/range", `{"key":"Zm9v","revision":"1000000"}`, http.StatusBadRequest, 11, "etcdserver: mvcc: required revision is a future revision"},
				{"/v3/kv/put", `{"key":"","value":"dg=="}`, http.StatusBadRequest, 3, "etcdserver: key is not provided"},
				{"/v3/kv/put", `{"key":"Zm9v","lease":"12345"}`, http.StatusNotFound, 5, "etcdserver: requested lease not found"},
				{"/v3/kv/range", `{"key":`, http.StatusBadRequest, 3, "unexpected EOF"},
				{"/v3/kv/nothing", `{}`, http.StatusNotFound, 5, "Not Found"},
			} {
				status, out := gwPost(t, c.Members[0], tc.path, tc.body)
				if status != tc.status || out["code"] != tc.code || out["message"] != tc.message {
					t.Errorf("POST %s %s: %d %v, want %d code %v %q", tc.path, tc.body, status, out, tc.status, tc.code, tc.message)
				}
			}
		})

		t.Run("TooLarge", func(t *testing.T) {
			// A body larger than any request a member accepts is refused before it is read.
			big := fmt.Sprintf(`{"key":%q,"value":%q}`, b64(k("big")), b64(strings.Repeat("x", 4<<20)))
			status, out := gwPost(t, c.Members[0], "/v3/kv/put", big)
			if status != http.StatusTooManyRequests || out["code"] != float64(8) {
				t.Fatalf("put of %d bytes: %d %v, want 429 and code 8 (ResourceExhausted)", len(big), status, out)
			}
			// One the gateway lets through but over --max-request-bytes gets etcd's error.
			over := fmt.Sprintf(`{"key":%q,"value":%q}`, b64(k("big")), b64(strings.Repeat("x", 3<<19)))
			status, out = gwPost(t, c.Members[0], "/v3/kv/put", over)
			if status != http.StatusBadRequest || out["message"] != "etcdserver: request is too large" {
				t.Fatalf("put of a 1.5 MiB value: %d %v, want 400 etcdserver: request is too large", status, out)
			}
		})

		t.Run("Watch", func(t *testing.T) {
			// A watch over HTTP stays open after the request body ended, and streams events.
			wctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			body := fmt.Sprintf(`{"create_request":{"key":%q,"prev_kv":true}}`, b64(k("w")))
			req, err := http.NewRequestWithContext(wctx, http.MethodPost, last.ClientURL+"/v3/watch", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Close = true
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
			defer resp.Body.Close()
			lines := bufio.NewScanner(resp.Body)
			// next reads one streamed answer: whether it announces the watch's creation, and
			// its events.
			next := func() (created bool, evs []gwEvent) {
				t.Helper()
				if !lines.Scan() {
					t.Fatalf("watch stream ended: %v", lines.Err())
				}
				var msg struct {
					Result *struct {
						Created bool `json:"created"`
						Events  []struct {
							Type   string                  `json:"type"`
							KV     struct{ Value []byte }  `json:"kv"`
							PrevKV *struct{ Value []byte } `json:"prev_kv"`
						} `json:"events"`
					} `json:"result"`
				}
				if err := json.Unmarshal(lines.Bytes(), &msg); err != nil || msg.Result == nil {
					t.Fatalf("watch stream line %q: %v", lines.Bytes(), err)
				}
				for _, e := range msg.Result.Events {
					ev := gwEvent{typ: e.Type, value: string(e.KV.Value)}
					if e.PrevKV != nil {
						ev.prev = string(e.PrevKV.Value)
					}
					evs = append(evs, ev)
				}
				return msg.Result.Created, evs
			}
			if created, _ := next(); !created {
				t.Fatalf("first watch answer is not the creation: %s", lines.Bytes())
			}
			mustPut(t, cli, k("w"), "v1")
			mustPut(t, cli, k("w"), "v2")
			mustDelete(t, cli, k("w"))
			var got []gwEvent
			for len(got) < 3 {
				_, evs := next()
				got = append(got, evs...)
			}
			want := []gwEvent{{value: "v1"}, {value: "v2", prev: "v1"}, {typ: "DELETE", prev: "v2"}}
			for i, w := range want {
				if got[i] != w {
					t.Fatalf("watch events over HTTP: %+v, want %+v", got, want)
				}
			}
		})

		t.Run("CORS", func(t *testing.T) {
			for _, method := range []string{http.MethodOptions, http.MethodGet} {
				req, err := http.NewRequestWithContext(ctx(t), method, c.Members[0].ClientURL+"/health", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Close = true
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("%s /health: %v", method, err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
					t.Fatalf("%s /health: %d, Access-Control-Allow-Origin %q", method, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
				}
			}
		})
	})
}

// gwEvent is a watch event as read from the gateway: its type ("" for a put), value and
// previous value.
type gwEvent struct{ typ, value, prev string }

// TestWatchHalfClosedStream checks that a gRPC watch stream whose client closed its sending
// side keeps delivering events, as etcd's does (the JSON gateway closes it once it has read the
// request body).
func TestWatchHalfClosedStream(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	cli := c.Client()
	k := keyer(t)
	wctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	stream, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(k("h"))}}}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || !r.Created {
		t.Fatalf("creation: %v %v", r, err)
	}
	p := mustPut(t, cli, k("h"), "v", clientv3.WithPrevKV())
	r, err := stream.Recv()
	if err != nil || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != p.Header.Revision {
		t.Fatalf("after the client closed its side, the put at %d: %v %v", p.Header.Revision, r, err)
	}
}

// TestGatewayUnixSocket checks the JSON gateway of a member whose only client URL is a unix
// socket at a relative path (etcd's unix://localhost:<port> form): the gateway reaches the
// member's gRPC services through it.
func TestGatewayUnixSocket(t *testing.T) {
	t.Chdir(t.TempDir())
	peer := fmt.Sprintf("http://127.0.0.1:%d", testcluster.FreePorts(t, 1)[0])
	cfg, err := config.Load([]string{"--name", "u", "--data-dir", "u.ordo",
		"--listen-client-urls", "unix://localhost:12379", "--advertise-client-urls", "unix://localhost:12379",
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "u=" + peer}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m, err := server.New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", "localhost:12379")
	}}}
	defer hc.CloseIdleConnections()
	waitFor(t, 30*time.Second, "put through the gateway on a unix socket", func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx(t), http.MethodPost, "http://localhost/v3/kv/put", strings.NewReader(`{"key":"dQ==","value":"dg=="}`))
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return false, err
		}
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		return true, nil
	})
}
