package server

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	"github.com/ordo-db/ordo/internal/httpapi"
)

// grpcOverheadBytes is the room a gRPC message needs beyond the request itself.
const grpcOverheadBytes = 512 * 1024

// startClient opens the client listeners and serves gRPC and HTTP on them.
func (m *Member) startClient() error {
	m.grpcServer = grpc.NewServer(
		grpc.MaxRecvMsgSize(int(m.cfg.MaxRequestBytes)+grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(m.cfg.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: false}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		grpc.ChainUnaryInterceptor(m.metrics.unaryInterceptor, m.requireLeaderUnary),
		grpc.ChainStreamInterceptor(m.metrics.streamInterceptor, m.requireLeaderStream),
	)
	pb.RegisterKVServer(m.grpcServer, &kvServer{m: m})
	pb.RegisterClusterServer(m.grpcServer, &clusterServer{m: m})
	pb.RegisterMaintenanceServer(m.grpcServer, &maintenanceServer{m: m})
	pb.RegisterWatchServer(m.grpcServer, newWatchServer(m))
	pb.RegisterLeaseServer(m.grpcServer, &leaseServer{m: m})
	pb.RegisterAuthServer(m.grpcServer, &authServer{m: m})

	mux := http.NewServeMux()
	mux.HandleFunc("/version", m.serveVersion)
	m.handleMonitoring(mux)
	if m.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	m.httpServer = &http.Server{Handler: httpapi.CORS(mux), ReadHeaderTimeout: 10 * time.Second}

	for _, u := range m.cfg.ListenClientURLs {
		l, err := listen(u)
		if err != nil {
			return err
		}
		sl := newSplitListener(l)
		m.clientLns = append(m.clientLns, sl)
		m.serve("grpc", func() error { return m.grpcServer.Serve(sl.grpc) })
		m.serve("http", func() error { return m.httpServer.Serve(sl.web) })
	}
	if !m.cfg.EnableGRPCGateway {
		return m.startMetrics()
	}
	// The JSON gateway is a gRPC client of this member, through its first client listener.
	conn, err := grpc.NewClient(dialTarget(m.clientLns[0].inner.Addr()),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithNoProxy(), // it talks to itself, whatever HTTPS_PROXY says
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		return fmt.Errorf("json gateway: %w", err)
	}
	m.gatewayConn = conn
	gateway, err := httpapi.Gateway(m.ctx, conn, gatewayMaxBody(m.cfg.MaxRequestBytes))
	if err != nil {
		return err
	}
	mux.Handle("/v3/", gateway)
	return m.startMetrics()
}

// gatewayMaxBody bounds a JSON gateway request: room for the largest gRPC message a member
// accepts in base64 and JSON, so that a request too large for gRPC gets gRPC's own error.
func gatewayMaxBody(maxRequestBytes uint) int64 {
	return 2 * (int64(maxRequestBytes) + grpcOverheadBytes)
}

// dialTarget is the gRPC target that reaches a listener bound to addr from this host.
func dialTarget(addr net.Addr) string {
	if addr.Network() == "unix" {
		return "unix:" + addr.String() // a relative path too ("unix://" takes no relative paths)
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// handleMonitoring adds what both the client and the metrics URLs serve: /metrics and the
// health endpoints.
func (m *Member) handleMonitoring(mux *http.ServeMux) {
	mux.Handle("/metrics", m.metrics.handler())
	mux.HandleFunc("/health", m.serveHealth)
	mux.HandleFunc("/livez", m.serveHealth)
	mux.HandleFunc("/readyz", m.serveHealth)
}

// startMetrics serves /metrics and the health endpoints on --listen-metrics-urls, as etcd
// does, for scrapers and probes that should not share the client port.
func (m *Member) startMetrics() error {
	if len(m.cfg.ListenMetricsURLs) == 0 {
		return nil
	}
	mux := http.NewServeMux()
	m.handleMonitoring(mux)
	m.metricsServer = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	for _, u := range m.cfg.ListenMetricsURLs {
		l, err := listen(u)
		if err != nil {
			return err
		}
		m.metricsLns = append(m.metricsLns, l)
		m.serve("metrics", func() error { return m.metricsServer.Serve(l) })
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (m *Member) serveVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"etcdserver": version.Version, "etcdcluster": "3.7.0"})
}

func (m *Member) serveHealth(w http.ResponseWriter, r *http.Request) {
	type health struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if m.node.Leader() == 0 {
		writeJSON(w, http.StatusServiceUnavailable, health{"false", "RAFT NO LEADER"})
		return
	}
	writeJSON(w, http.StatusOK, health{"true", ""})
}

// requiresLeader reports whether the client asked (clientv3.WithRequireLeader) to fail rather
// than be served by a member that knows no leader.
func requiresLeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	for _, v := range md.Get(rpctypes.MetadataRequireLeaderKey) {
		if v == rpctypes.MetadataHasLeader {
			return true
		}
	}
	return false
}

func (m *Member) requireLeaderUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if requiresLeader(ctx) && m.node.Leader() == 0 {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	return handler(ctx, req)
}

func (m *Member) requireLeaderStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if requiresLeader(ss.Context()) && m.node.Leader() == 0 {
		return rpctypes.ErrGRPCNoLeader
	}
	return handler(srv, ss)
}
