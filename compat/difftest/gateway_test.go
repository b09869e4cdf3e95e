package difftest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// gwStep is one request to the JSON gateway. A streaming step reads lines answers and then
// ends the request; any other step reads the whole response.
type gwStep struct {
	method, path, body string
	lines              int
	unordered          bool // the stream's answers may come in any order (etcd's do)
}

// gwAnswer is what a step got back, normalised for comparison.
type gwAnswer struct {
	Status  int
	Headers map[string]string
	Body    []any
}

// gwHeaders are the response headers compared.
var gwHeaders = []string{"Content-Type", "Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
	"Access-Control-Allow-Headers", "Grpc-Metadata-Content-Type"}

// gwVolatile are JSON fields whose values differ between any two clusters (ids, terms, raft
// indexes, which count each server's internal entries too, sizes, URLs with their ports); only
// their presence is compared.
var gwVolatile = map[string]bool{"cluster_id": true, "member_id": true, "raft_term": true, "leader": true,
	"raftTerm": true, "raftIndex": true, "raftAppliedIndex": true, "dbSize": true, "dbSizeInUse": true,
	"peerURLs": true, "clientURLs": true}

// TestGatewayDifferential sends the same JSON gateway requests to etcd and Ordo and compares
// the HTTP status, the headers above and the JSON answers field by field (member and cluster
// ids, terms, raft indexes, sizes and URLs by presence only; a lease's remaining TTL, which
// depends on timing, too). Lease ids are given, not assigned.
func TestGatewayDifferential(t *testing.T) {
	ordoBin, etcdBin := binaries(t)
	etcd, ordo := startServer(t, "etcd", etcdBin), startServer(t, "ordo", ordoBin)
	steps := []gwStep{
		{method: "POST", path: "/v3/kv/put", body: `{"key":"Zm9v","value":"YmFy"}`},
		{method: "POST", path: "/v3/kv/put", body: `{"key":"Zm9vMg==","value":"YmF6","prev_kv":true}`},
		{method: "POST", path: "/v3/kv/put", body: `{"key":"Zm9vMg==","value":"YmF6","prev_kv":true}`},
		{method: "POST", path: "/v3/kv/range", body: `{"key":"Zm9v"}`},
		{method: "POST", path: "/v3/kv/range", body: `{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sort_target":"KEY","limit":1}`},
		{method: "POST", path: "/v3/kv/range", body: `{"key":"Zm9v","range_end":"Zm9w","count_only":true}`},
		{method: "POST", path: "/v3/kv/range", body: `{"key":"Zm9v","revision":"100"}`},
		{method: "POST", path: "/v3/kv/range", body: `{"key":"Zm9v","sort_order":"SIDEWAYS"}`},
		{method: "POST", path: "/v3/kv/range", body: `{"key":`},
		{method: "POST", path: "/v3/kv/range", body: `{"key":"Zm9v","bogus":1}`},
		{method: "POST", path: "/v3/kv/range", body: `{"key":"not base64!"}`},
		{method: "POST", path: "/v3/kv/range", body: ``},
		{method: "GET", path: "/v3/kv/range"},
		{method: "POST", path: "/v3/kv/nothing", body: `{}`},
		{method: "OPTIONS", path: "/v3/kv/put"},
		{method: "POST", path: "/v3/kv/put", body: `{"key":"","value":"YmF6"}`},
		{method: "POST", path: "/v3/kv/put", body: `{"key":"Zm9v","value":"YmF6","lease":"5"}`},
		{method: "POST", path: "/v3/lease/grant", body: `{"ID":"1000","TTL":"60"}`},
		{method: "POST", path: "/v3/lease/grant", body: `{"ID":"1000","TTL":"60"}`},
		{method: "POST", path: "/v3/kv/put", body: `{"key":"bGVhc2Vk","value":"dg==","lease":"1000"}`},
		{method: "POST", path: "/v3/lease/timetolive", body: `{"ID":"1000","keys":true}`},
		{method: "POST", path: "/v3/kv/lease/timetolive", body: `{"ID":"1000"}`},
		{method: "POST", path: "/v3/lease/leases", body: `{}`},
		{method: "POST", path: "/v3/lease/keepalive", body: `{"ID":"1000"}`, lines: 1},
		{method: "POST", path: "/v3/lease/keepalive", body: `{"ID":"7"}`, lines: 1},
		{method: "POST", path: "/v3/lease/revoke", body: `{"ID":"1000"}`},
		{method: "POST", path: "/v3/kv/lease/revoke", body: `{"ID":"1000"}`},
		{method: "POST", path: "/v3/kv/txn", body: `{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"}],"success":[{"request_range":{"key":"Zm9v"}},{"request_put":{"key":"dHhu","value":"MQ=="}}],"failure":[{"request_delete_range":{"key":"Zm9v"}}]}`},
		{method: "POST", path: "/v3/kv/txn", body: `{"compare":[{"key":"Zm9v","target":"MOD","mod_revision":"1"}],"failure":[{"request_delete_range":{"key":"dHhu","prev_kv":true}}]}`},
		{method: "POST", path: "/v3/kv/txn", body: `{"success":[{"request_put":{"key":"ZA=="}},{"request_put":{"key":"ZA=="}}]}`},
		{method: "POST", path: "/v3/kv/deleterange", body: `{"key":"Zm9v","range_end":"Zm9w","prev_kv":true}`},
		{method: "POST", path: "/v3/kv/compaction", body: `{"revision":"3"}`},
		{method: "POST", path: "/v3/kv/compaction", body: `{"revision":"3"}`},
		{method: "POST", path: "/v3/kv/range", body: `{"key":"Zm9v","revision":"2"}`},
		{method: "POST", path: "/v3/watch", body: `{"create_request":{"key":"Zm9v","range_end":"Zm9w","start_revision":"4","prev_kv":true}}`, lines: 2},
		{method: "POST", path: "/v3/watch", body: `{"create_request":{"key":"Zm9v","start_revision":"1"}}`, lines: 2},
		{method: "POST", path: "/v3/watch", body: `{"create_request":{"key":"Zm9v"}}{"cancel_request":{"watch_id":"0"}}`, lines: 2},
		{method: "POST", path: "/v3/watch", body: `{"create_request":{"key":"Zm9v","watch_id":"5"}}{"progress_request":{}}`, lines: 2, unordered: true},
		{method: "POST", path: "/v3/maintenance/status", body: `{}`},
		{method: "POST", path: "/v3/maintenance/alarm", body: `{"action":"GET"}`},
		{method: "POST", path: "/v3/cluster/member/list", body: `{}`},
		// Defragment answers without a header; MoveLeader checks its target.
		{method: "POST", path: "/v3/maintenance/defragment", body: `{}`},
		{method: "POST", path: "/v3/maintenance/transfer-leadership", body: `{"targetID":"12345"}`},
	}
	diffs := 0
	for i, st := range steps {
		e, o := gwDo(t, etcd.url, st), gwDo(t, ordo.url, st)
		if !reflect.DeepEqual(e, o) {
			diffs++
			ej, _ := json.Marshal(e)
			oj, _ := json.Marshal(o)
			t.Errorf("step %d: %s %s %s\n etcd: %s\n ordo: %s", i, st.method, st.path, st.body, ej, oj)
		}
	}
	t.Logf("%d JSON gateway requests, %d differences", len(steps), diffs)
}

// gwDo sends st to the server at base and returns its normalised answer.
func gwDo(t *testing.T, base string, st gwStep) gwAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, st.method, base+st.path, strings.NewReader(st.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", st.method, base+st.path, err)
	}
	defer resp.Body.Close()
	a := gwAnswer{Status: resp.StatusCode, Headers: map[string]string{}}
	for _, h := range gwHeaders {
		if v := resp.Header.Get(h); v != "" {
			a.Headers[h] = v
		}
	}
	var docs []string
	if st.lines > 0 {
		sc := bufio.NewScanner(resp.Body)
		for len(docs) < st.lines && sc.Scan() {
			docs = append(docs, sc.Text())
		}
		if len(docs) < st.lines {
			t.Fatalf("%s %s: %d of %d stream lines (%v)", st.method, base+st.path, len(docs), st.lines, sc.Err())
		}
	} else {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: read: %v", st.method, base+st.path, err)
		}
		docs = []string{string(b)}
	}
	for _, d := range docs {
		if strings.TrimSpace(d) == "" {
			a.Body = append(a.Body, "")
			continue
		}
		var v any
		if err := json.Unmarshal([]byte(d), &v); err != nil {
			a.Body = append(a.Body, fmt.Sprintf("not JSON: %q", d))
			continue
		}
		a.Body = append(a.Body, gwNormalise(v))
	}
	if st.unordered {
		sort.Slice(a.Body, func(i, j int) bool { return fmt.Sprint(a.Body[i]) < fmt.Sprint(a.Body[j]) })
	}
	return a
}

func gwNormalise(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if gwVolatile[k] {
				x[k] = "(present)"
				continue
			}
			x[k] = gwNormalise(e)
		}
		// A member's own id, listed by member list, differs too.
		if _, ok := x["peerURLs"]; ok {
			x["ID"] = "(present)"
		}
		if _, ok := x["grantedTTL"]; ok && x["TTL"] != nil {
			x["TTL"] = "(remaining)"
		}
	case []any:
		for i, e := range x {
			x[i] = gwNormalise(e)
		}
	case string:
		// protojson's error messages use a no-break space or a space at random (so that
		// nobody depends on their exact text); either is the same message.
		return strings.ReplaceAll(x, "\u00a0", " ")
	}
	return v
}
