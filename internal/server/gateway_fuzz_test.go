package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// gatewayFuzzPaths are the JSON gateway endpoints FuzzGateway sends to.
var gatewayFuzzPaths = []string{
	"/v3/kv/range", "/v3/kv/put", "/v3/kv/deleterange", "/v3/kv/txn", "/v3/kv/compaction",
	"/v3/lease/grant", "/v3/lease/revoke", "/v3/lease/timetolive", "/v3/lease/leases",
	"/v3/maintenance/status", "/v3/maintenance/alarm", "/v3/maintenance/hashkv",
	"/v3/cluster/member/list", "/v3/watch", "/v3/lease/keepalive",
}

// FuzzGateway sends arbitrary bodies to the JSON gateway of a running member. Whatever the
// body, the answer is a client error or a result, never an internal error (HTTP 500), and the
// member keeps serving. The streaming endpoints are read for a moment and then left.
func FuzzGateway(f *testing.F) {
	c := testcluster.New(f, 1, testcluster.Options{Quiet: true})
	m := c.Members[0]
	cli := m.Client() // made here: the cluster's helpers belong to f, not to each input's t
	for i, body := range []string{
		`{"key":"Zm9v"}`, `{"key":"Zm9v","value":"YmFy"}`, `{"key":"Zm9v","range_end":"AA=="}`,
		`{"compare":[{"key":"Zm9v","target":"MOD","mod_revision":"1"}],"success":[{"request_put":{"key":"YQ=="}}]}`,
		`{"revision":"1"}`, `{"TTL":"5"}`, `{"ID":"1"}`, `{"ID":"1","keys":true}`, `{}`, `{}`,
		`{"action":"GET"}`, `{"revision":"0"}`, `{}`, `{"create_request":{"key":"Zm9v"}}`, `{"ID":"1"}`,
	} {
		f.Add(uint8(i), []byte(body))
	}
	f.Add(uint8(0), []byte(`{"key":`))
	f.Add(uint8(3), []byte(`{"success":[{"request_txn":{"success":[{"request_range":{"key":"YQ==","sort_order":7}}]}}]}`))
	f.Add(uint8(13), []byte(`{"create_request":{"key":"Zm9v","filters":["NOPUT",9]}}{"cancel_request":{}}`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := gatewayFuzzPaths[int(which)%len(gatewayFuzzPaths)]
		stream := path == "/v3/watch" || path == "/v3/lease/keepalive"
		timeout := 5 * time.Second
		if stream {
			timeout = 200 * time.Millisecond
		}
		rctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodPost, m.ClientURL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if stream && errors.Is(err, context.DeadlineExceeded) {
				return
			}
			t.Fatalf("POST %s %q: %v", path, body, err)
		}
		defer resp.Body.Close()
		answer, err := io.ReadAll(resp.Body)
		if err != nil && !(stream && errors.Is(err, context.DeadlineExceeded)) {
			t.Fatalf("POST %s %q: read: %v", path, body, err)
		}
		if resp.StatusCode == http.StatusInternalServerError {
			t.Fatalf("POST %s %q: internal error: %s", path, body, answer)
		}
		checkAlive(t, cli, "fuzz-gateway-alive")
	})
}
