package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// scrape fetches url and returns its samples by series, as Prometheus' text format prints
// them: `name{label="value",...}` with the labels in name order.
func scrape(t testing.TB, url string) map[string]float64 {
	t.Helper()
	status, body := httpGet(t, url)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", url, status, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("GET %s: bad sample line %q", url, line)
		}
		out[line[:i]] = v
	}
	return out
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	status, b := httpDo(t, http.MethodGet, url, "")
	return status, string(b)
}

// httpDo sends one HTTP request with body (none if empty) on a connection of its own and
// returns the status and the whole answer.
func httpDo(t testing.TB, method, url, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx(t), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // no idle connection outlives the test
	if len(body) > 1<<20 {
		// Wait for the member's go-ahead: a body it refuses unread is not sent.
		req.Header.Set("Expect", "100-continue")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, b
}

// TestMetrics checks the etcd metrics every member serves on its client URLs: the ones
// dashboards and alerts are built on report the member's real state.
func TestMetrics(t *testing.T) {
	forEachClusterSize(t, func(t *testing.T, c *testcluster.Cluster) {
		k := keyer(t)
		cli := c.Members[0].Client()
		p := mustPut(t, cli, k("a"), "1")
		leaders := 0
		for i, m := range c.Members {
			// Every member applies the put; wait for it before reading its gauges.
			waitFor(t, 10*time.Second, m.Name+" applies the put", func() (bool, error) {
				s := scrape(t, m.ClientURL+"/metrics")
				return s["etcd_debugging_mvcc_current_revision"] >= float64(p.Header.Revision), nil
			})
			s := scrape(t, m.ClientURL+"/metrics")
			want := map[string]float64{
				"etcd_server_has_leader":                                                 1,
				fmt.Sprintf(`etcd_server_id{server_id="%x"}`, c.MemberID(i)):             1,
				"etcd_server_is_learner":                                                 0,
				fmt.Sprintf(`etcd_server_version{server_version="%s"}`, version.Version): 1,
			}
			for series, v := range want {
				if got, ok := s[series]; !ok || got != v {
					t.Errorf("%s: %s = %v (present %v), want %v", m.Name, series, got, ok, v)
				}
			}
			leaders += int(s["etcd_server_is_leader"])
			for _, series := range []string{
				"etcd_server_leader_changes_seen_total",
				"etcd_server_proposals_committed_total",
				"etcd_server_proposals_applied_total",
				"etcd_disk_wal_fsync_duration_seconds_count",
				"etcd_disk_backend_commit_duration_seconds_count",
				"etcd_mvcc_db_total_size_in_bytes",
				"etcd_server_quota_backend_bytes",
				"process_resident_memory_bytes",
				"go_goroutines",
			} {
				if s[series] <= 0 {
					t.Errorf("%s: %s = %v, want > 0", m.Name, series, s[series])
				}
			}
			if s["etcd_server_proposals_applied_total"] > s["etcd_server_proposals_committed_total"] {
				t.Errorf("%s: applied %v > committed %v", m.Name, s["etcd_server_proposals_applied_total"], s["etcd_server_proposals_committed_total"])
			}
		}
		if leaders != 1 {
			t.Errorf("etcd_server_is_leader is 1 on %d members, want 1", leaders)
		}
		// An open watch stream is counted.
		wctx, wcancel := context.WithCancel(context.Background())
		defer wcancel()
		cli.Watch(wctx, k("w"))
		waitFor(t, 10*time.Second, "watch stream counted", func() (bool, error) {
			return scrape(t, c.Members[0].ClientURL+"/metrics")["etcd_debugging_mvcc_watch_stream_total"] >= 1, nil
		})
		// The member that served the put counted it, by etcd's gRPC labels.
		s := scrape(t, c.Members[0].ClientURL+"/metrics")
		put := `grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}`
		if s[put] < 1 {
			t.Errorf("%s = %v, want >= 1", put, s[put])
		}
		if _, err := cli.Get(ctx(t), k("a"), clientv3.WithRev(p.Header.Revision+1000)); err == nil {
			t.Fatalf("get at a future revision succeeded")
		}
		s = scrape(t, c.Members[0].ClientURL+"/metrics")
		future := `grpc_server_handled_total{grpc_code="OutOfRange",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}`
		if s[future] < 1 {
			t.Errorf("%s = %v, want >= 1", future, s[future])
		}
	})
}

// TestMetricsURLs checks --listen-metrics-urls: /metrics and the health endpoints on a port of
// their own, and nothing else there; and, on the same member, --metrics=extensive (gRPC latency
// histograms) and --enable-grpc-gateway=false (no JSON gateway).
func TestMetricsURLs(t *testing.T) {
	ports := testcluster.FreePorts(t, 2)
	urls := []string{fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://localhost:%d", ports[1])}
	c := testcluster.New(t, 1, testcluster.Options{Args: []string{"--listen-metrics-urls", strings.Join(urls, ","),
		"--metrics", "extensive", "--enable-grpc-gateway=false"}})
	if _, err := c.Leader(30 * time.Second); err != nil {
		t.Fatalf("leader: %v", err)
	}
	k := keyer(t)
	mustPut(t, c.Client(), k("a"), "1")
	put := `grpc_server_handling_seconds_count{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}`
	if s := scrape(t, urls[0]+"/metrics"); s[put] < 1 {
		t.Errorf("--metrics=extensive: %s = %v, want >= 1", put, s[put])
	}
	if status, body := httpDo(t, http.MethodPost, c.Members[0].ClientURL+"/v3/kv/range", `{"key":"YQ=="}`); status != http.StatusNotFound {
		t.Errorf("--enable-grpc-gateway=false: POST /v3/kv/range: %d %s, want 404", status, body)
	}
	for _, u := range urls {
		if s := scrape(t, u+"/metrics"); s["etcd_server_has_leader"] != 1 {
			t.Errorf("%s/metrics: etcd_server_has_leader = %v, want 1", u, s["etcd_server_has_leader"])
		}
		for _, path := range []string{"/health", "/livez", "/readyz"} {
			if status, body := httpGet(t, u+path); status != http.StatusOK || !strings.Contains(body, `"health":"true"`) {
				t.Errorf("GET %s%s: %d %s", u, path, status, body)
			}
		}
		if status, _ := httpGet(t, u+"/version"); status != http.StatusNotFound {
			t.Errorf("GET %s/version: status %d, want 404 (only metrics and health are served there)", u, status)
		}
	}
	// The member stops cleanly with its metrics listeners, which are then closed.
	c.Members[0].Stop()
	dctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(dctx, http.MethodGet, urls[0]+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("metrics URL still serves after the member stopped: status %d", resp.StatusCode)
	}
}
