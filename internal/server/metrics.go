package server

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics are a member's Prometheus metrics, under etcd's names so that existing dashboards
// and alerts work unchanged (docs/metrics.md lists them). Each member has a registry of its
// own: several members can run in one process (tests), and nothing registers globally.
type metrics struct {
	reg *prometheus.Registry

	proposalsPending prometheus.Gauge
	proposalsFailed  prometheus.Counter
	logSync          prometheus.Histogram
	apply            prometheus.Histogram
	watchStreams     prometheus.Gauge
	grpcStarted      *prometheus.CounterVec
	grpcHandled      *prometheus.CounterVec
	grpcHandling     *prometheus.HistogramVec // with --metrics=extensive only
}

// diskBuckets are etcd's buckets for disk latencies: 1 ms to about 8 s, doubling.
var diskBuckets = prometheus.ExponentialBuckets(0.001, 2, 14)

// newMetrics builds m's metrics once its id is known. The gauges read m's parts when scraped,
// which happens only on the listeners startClient opens, once every part exists.
func newMetrics(m *Member) *metrics {
	mt := &metrics{
		reg: prometheus.NewRegistry(),
		proposalsPending: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "server", Name: "proposals_pending",
			Help: "The current number of pending proposals to commit."}),
		proposalsFailed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "server", Name: "proposals_failed_total",
			Help: "The total number of failed proposals seen."}),
		logSync: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "etcd", Subsystem: "disk", Name: "wal_fsync_duration_seconds",
			Help: "The latency distributions of durably appending entries to the raft log.", Buckets: diskBuckets}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "etcd", Subsystem: "disk", Name: "backend_commit_duration_seconds",
			Help: "The latency distributions of applying a batch of committed entries and committing it to storage.", Buckets: diskBuckets}),
		watchStreams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "debugging_mvcc", Name: "watch_stream_total",
			Help: "Total number of watch streams."}),
		grpcStarted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "grpc_server_started_total",
			Help: "Total number of RPCs started on the server."}, []string{"grpc_type", "grpc_service", "grpc_method"}),
		grpcHandled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure."}, []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}),
	}
	gauge := func(subsystem, name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: subsystem, Name: name, Help: help}, f)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	mt.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		mt.proposalsPending, mt.proposalsFailed, mt.logSync, mt.apply, mt.watchStreams, mt.grpcStarted, mt.grpcHandled,
		gauge("server", "has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.",
			func() float64 { return b2f(m.node.Leader() != 0) }),
		gauge("server", "is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
			func() float64 { return b2f(m.node.Leader() == m.id) }),
		gauge("server", "is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.",
			func() float64 { return b2f(isLearner(m.node.Status(), m.id)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "server", Name: "leader_changes_seen_total",
			Help: "The number of leader changes seen."}, func() float64 { return float64(m.node.LeaderChanges()) }),
		gauge("server", "proposals_committed_total", "The total number of consensus proposals committed.",
			func() float64 { return float64(m.node.Status().GetCommit()) }),
		gauge("server", "proposals_applied_total", "The total number of consensus proposals applied.",
			func() float64 { return float64(m.node.AppliedIndex()) }),
		gauge("server", "quota_backend_bytes", "Current backend storage quota size in bytes.",
			func() float64 { return float64(m.quota()) }),
		gauge("mvcc", "db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.",
			func() float64 { return float64(m.engine.Size()) }),
		gauge("mvcc", "db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.",
			func() float64 { return float64(m.engine.Size()) }),
		gauge("debugging_mvcc", "current_revision", "The current revision of store.",
			func() float64 { return float64(m.kv.CurrentRev()) }),
		gauge("debugging_mvcc", "compact_revision", "The revision of the last compaction in store.",
			func() float64 { return float64(m.kv.CompactRev()) }),
	)
	if m.cfg.Metrics == "extensive" {
		mt.grpcHandling = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: prometheus.DefBuckets}, []string{"grpc_type", "grpc_service", "grpc_method"})
		mt.reg.MustRegister(mt.grpcHandling)
	}
	info := func(name, help, label, value string) {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "server", Name: name, Help: help}, []string{label})
		g.WithLabelValues(value).Set(1)
		mt.reg.MustRegister(g)
	}
	info("version", "Which version is running. 1 for 'server_version' label with current version.", "server_version", version.Version)
	info("go_version", "Which Go version server is running with. 1 for 'server_go_version' label with current version.", "server_go_version", runtime.Version())
	info("id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.", "server_id", fmt.Sprintf("%x", m.id))
	return mt
}

// handler serves the metrics in Prometheus' text format.
func (mt *metrics) handler() http.Handler {
	return promhttp.HandlerFor(mt.reg, promhttp.HandlerOpts{})
}

func observeSeconds(h prometheus.Histogram) func(time.Duration) {
	return func(d time.Duration) { h.Observe(d.Seconds()) }
}

// splitMethod splits a gRPC full method name, "/etcdserverpb.KV/Range", into service and
// method.
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndex(full, "/"); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// unaryInterceptor counts unary calls as go-grpc-prometheus does for etcd.
func (mt *metrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	svc, method := splitMethod(info.FullMethod)
	mt.grpcStarted.WithLabelValues("unary", svc, method).Inc()
	start := time.Now()
	resp, err := handler(ctx, req)
	mt.handled("unary", svc, method, err, start)
	return resp, err
}

// streamInterceptor counts streaming calls as go-grpc-prometheus does for etcd.
func (mt *metrics) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	typ := "bidi_stream"
	switch {
	case info.IsClientStream && !info.IsServerStream:
		typ = "client_stream"
	case !info.IsClientStream && info.IsServerStream:
		typ = "server_stream"
	}
	svc, method := splitMethod(info.FullMethod)
	mt.grpcStarted.WithLabelValues(typ, svc, method).Inc()
	start := time.Now()
	err := handler(srv, ss)
	mt.handled(typ, svc, method, err, start)
	return err
}

// handled counts a finished call, and with --metrics=extensive records how long it took.
func (mt *metrics) handled(typ, svc, method string, err error, start time.Time) {
	mt.grpcHandled.WithLabelValues(typ, svc, method, status.Code(err).String()).Inc()
	if mt.grpcHandling != nil {
		mt.grpcHandling.WithLabelValues(typ, svc, method).Observe(time.Since(start).Seconds())
	}
}
