package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/apply"
	"github.com/ordo-db/ordo/internal/auth"
	"github.com/ordo-db/ordo/internal/config"
	"github.com/ordo-db/ordo/internal/lease"
	"github.com/ordo-db/ordo/internal/mvcc"
	"github.com/ordo-db/ordo/internal/raftnode"
	"github.com/ordo-db/ordo/internal/storage"
	"github.com/ordo-db/ordo/internal/transport"
	"github.com/ordo-db/ordo/internal/watch"
)

// Member is one running Ordo member.
type Member struct {
	cfg *config.Config
	lg  *zap.Logger

	id        uint64
	clusterID uint64

	engine    *storage.Engine
	kv        *mvcc.Store
	applier   *apply.Applier
	node      *raftnode.Node
	transport *transport.Transport
	compactor *compactor
	hub       *watch.Hub
	leases    *lease.Store
	auth      *auth.Store
	renewer   *renewer
	reqIDs    *idGen
	space     *spaceGuard
	metrics   *metrics

	grpcServer *grpc.Server
	httpServer *http.Server
	// metricsServer serves --listen-metrics-urls.
	metricsServer *http.Server
	peerServer    *http.Server
	clientLns     []*splitListener
	peerLns       []net.Listener
	metricsLns    []net.Listener
	// gatewayConn is the JSON gateway's connection to this member's gRPC services.
	gatewayConn *grpc.ClientConn

	ready        chan struct{}
	readyOnce    sync.Once
	done         chan struct{}
	ctx          context.Context // canceled when the member stops
	cancel       context.CancelFunc
	shutdownOnce sync.Once
	wg           sync.WaitGroup
	errMu        sync.Mutex
	err          error
}

// New prepares a member from a validated configuration. It does not open ports.
func New(cfg *config.Config, lg *zap.Logger) (*Member, error) {
	ctx, cancel := context.WithCancel(context.Background())
	return &Member{cfg: cfg, lg: lg, ready: make(chan struct{}), done: make(chan struct{}), ctx: ctx, cancel: cancel}, nil
}

// Ready is closed once the member serves client requests.
func (m *Member) Ready() <-chan struct{} { return m.ready }

// Done is closed once the member has stopped, by Stop or by a fatal error (see Err).
func (m *Member) Done() <-chan struct{} { return m.done }

// Err returns the fatal error that stopped the member, if any.
func (m *Member) Err() error {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return m.err
}

// ID is the member id.
func (m *Member) ID() uint64 { return m.id }

// ClientAddrs are the addresses the client listeners are bound to.
func (m *Member) ClientAddrs() []net.Addr {
	var out []net.Addr
	for _, l := range m.clientLns {
		out = append(out, l.inner.Addr())
	}
	return out
}

// Start opens storage and listeners and starts serving; it returns once the member is running.
// Readiness (a published member record) is signalled later on Ready.
func (m *Member) Start() (err error) {
	defer func() {
		if err != nil {
			m.Stop()
		}
	}()
	if m.cfg.ForceNewCluster {
		return errors.New("--force-new-cluster is not supported yet")
	}
	if m.engine, err = storage.OpenWithOptions(m.cfg.DataDir, m.lg, storage.Options{SkipVerify: m.cfg.SkipStartupVerify}); err != nil {
		return err
	}
	if err := m.engine.CheckInvariants(); err != nil {
		return err
	}
	m.space = newSpaceGuard(m.engine, m.cfg.BackendQuota(), uint64(m.cfg.DiskReserveBytes), m.lg)
	peers, err := m.loadIdentity()
	if err != nil {
		return err
	}
	m.reqIDs = newIDGen(m.id, time.Now())
	m.metrics = newMetrics(m)
	if m.kv, err = mvcc.Open(m.engine.DB); err != nil {
		return fmt.Errorf("open mvcc: %w", err)
	}
	if m.leases, err = lease.Open(m.engine.DB); err != nil {
		return err
	}
	if m.auth, err = auth.Open(auth.Config{
		DB:             m.engine.DB,
		Logger:         m.lg,
		BcryptCost:     int(m.cfg.BcryptCost),
		TokenOptions:   m.cfg.AuthToken,
		TokenTTL:       time.Duration(m.cfg.AuthTokenTTL) * time.Second,
		WaitApplied:    m.waitApplied,
		ClientCertAuth: m.cfg.ClientTLS.ClientCertAuth,
	}); err != nil {
		return err
	}
	m.renewer = newRenewer(m)
	m.compactor = newCompactor(m.kv, m.lg)
	m.hub = watch.NewHub(m.kv, int(m.cfg.WatchBufferBytes))
	m.applier, err = apply.New(apply.Config{
		Engine:    m.engine,
		KV:        m.kv,
		Leases:    m.leases,
		Auth:      m.auth,
		Logger:    m.lg,
		OnMembers: m.syncPeers,
		OnCompact: m.compactor.schedule,
		OnPublish: m.hub.Notify,
		OnRestore: m.hub.Reset,
	})
	if err != nil {
		return err
	}
	if rev, ok := m.kv.PendingCompaction(); ok {
		m.compactor.schedule(rev, make(chan struct{}))
	}
	raftLog, err := storage.OpenRaftLog(m.engine)
	if err != nil {
		return err
	}
	m.transport, err = transport.New(transport.Config{
		LocalID:     m.id,
		ClusterID:   m.clusterID,
		Raft:        m,
		Snapshotter: snapshotter{m.engine},
		Logger:      m.lg,
	})
	if err != nil {
		return err
	}
	for _, u := range m.cfg.ListenPeerURLs {
		l, err := listen(u)
		if err != nil {
			return err
		}
		m.peerLns = append(m.peerLns, l)
	}
	electionTicks := int(m.cfg.ElectionTimeout / m.cfg.HeartbeatInterval)
	m.node, err = raftnode.Start(raftnode.Config{
		ID:             m.id,
		Peers:          peers,
		TickInterval:   m.cfg.HeartbeatInterval,
		ElectionTicks:  electionTicks,
		SnapshotCount:  m.cfg.SnapshotCount,
		CatchUpEntries: m.cfg.SnapshotCatchUpEntries,
		Engine:         m.engine,
		Log:            raftLog,
		StateMachine:   m.applier,
		Transport:      m.transport,
		Logger:         m.lg,
		ObserveLogSync: observeSeconds(m.metrics.logSync),
		ObserveApply:   observeSeconds(m.metrics.apply),
	})
	if err != nil {
		return err
	}
	// Peers are known only now that the raft node exists: the transport reports unreachable
	// peers to it.
	m.syncPeers()
	m.peerServer = &http.Server{Handler: m.transport.Handler(), ReadHeaderTimeout: 10 * time.Second}
	for _, l := range m.peerLns {
		m.serve("peer", func() error { return m.peerServer.Serve(l) })
	}
	if err := m.startClient(); err != nil {
		return err
	}
	if err := m.startAutoCompaction(); err != nil {
		return err
	}
	m.wg.Add(4)
	go m.watchNode()
	go m.publish()
	go m.renewer.run()
	go m.runLeaseClock()
	m.lg.Info("started member",
		zap.String("name", m.cfg.Name),
		zap.String("local-member-id", fmt.Sprintf("%x", m.id)),
		zap.String("cluster-id", fmt.Sprintf("%x", m.clusterID)),
		zap.String("data-dir", m.cfg.DataDir),
		zap.Strings("listen-client-urls", urlStrings(m.cfg.ListenClientURLs)),
		zap.Strings("listen-peer-urls", urlStrings(m.cfg.ListenPeerURLs)))
	return nil
}

// loadIdentity reads this member's and the cluster's ids, or, in a new data dir, derives them
// from the initial cluster and returns the raft peers to bootstrap with.
func (m *Member) loadIdentity() ([]raft.Peer, error) {
	id, err := storage.LocalID(m.engine.DB)
	if err != nil {
		return nil, err
	}
	if id != 0 {
		m.id = id
		if m.clusterID, err = storage.ClusterID(m.engine.DB); err != nil {
			return nil, err
		}
		m.lg.Info("restarting member from data dir; initial cluster settings are ignored", zap.String("data-dir", m.cfg.DataDir))
		return nil, nil
	}
	if m.cfg.InitialClusterState == "existing" {
		return nil, errors.New("--initial-cluster-state=existing: joining a running cluster is not supported yet")
	}
	var ids []uint64
	var peers []raft.Peer
	for name, urls := range m.cfg.InitialClusterMap {
		purls := urlStrings(urls)
		mid := memberID(purls, m.cfg.InitialClusterToken)
		if name == m.cfg.Name {
			m.id = mid
		}
		ctx, err := proto.Marshal(&pb.Member{ID: mid, Name: name, PeerURLs: purls})
		if err != nil {
			return nil, fmt.Errorf("marshal member: %w", err)
		}
		ids = append(ids, mid)
		peers = append(peers, raft.Peer{ID: mid, Context: ctx})
	}
	if m.id == 0 {
		return nil, fmt.Errorf("--initial-cluster has no member named %q", m.cfg.Name)
	}
	m.clusterID = clusterID(ids, m.cfg.InitialClusterToken)
	b := m.engine.DB.NewBatch()
	defer b.Close()
	if err := storage.SetLocalID(b, m.id); err != nil {
		return nil, err
	}
	if err := storage.SetClusterID(b, m.clusterID); err != nil {
		return nil, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return nil, fmt.Errorf("record member identity: %w", err)
	}
	return peers, nil
}

// syncPeers points the transport at the current members' peer URLs.
func (m *Member) syncPeers() {
	members, err := storage.Members(m.engine.DB)
	if err != nil {
		m.lg.Error("read members", zap.Error(err))
		return
	}
	for _, mem := range members {
		if mem.ID != m.id {
			m.transport.AddPeer(mem.ID, mem.PeerURLs)
		}
	}
}

// publish records this member's name and client URLs in the cluster, then declares readiness.
func (m *Member) publish() {
	defer m.wg.Done()
	clientURLs := urlStrings(m.cfg.AdvertiseClientURLs)
	for {
		if m.published(clientURLs) {
			break
		}
		ctx, cancel := context.WithTimeout(m.ctx, m.node.RequestTimeout())
		_, err := m.propose(ctx, &pb.InternalRaftRequest{ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{
			Member_ID:        m.id,
			MemberAttributes: &membershippb.Attributes{Name: m.cfg.Name, ClientUrls: clientURLs},
		}})
		cancel()
		if err == nil {
			break
		}
		if m.ctx.Err() != nil {
			return
		}
		m.lg.Warn("failed to publish member attributes; retrying", zap.Error(err))
	}
	m.readyOnce.Do(func() { close(m.ready) })
	m.lg.Info("ready to serve client requests", zap.Strings("advertise-client-urls", clientURLs))
}

func (m *Member) published(clientURLs []string) bool {
	members, err := storage.Members(m.engine.DB)
	if err != nil {
		return false
	}
	for _, mem := range members {
		if mem.ID == m.id {
			return mem.Name == m.cfg.Name && equalStrings(mem.ClientURLs, clientURLs)
		}
	}
	return false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// watchNode stops the member when the raft node fails.
func (m *Member) watchNode() {
	defer m.wg.Done()
	select {
	case <-m.node.Done():
		if err := m.node.Err(); err != nil {
			m.setErr(err)
			go m.Stop()
		}
	case <-m.ctx.Done():
	}
}

func (m *Member) setErr(err error) {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

// serve runs a server loop in a tracked goroutine.
func (m *Member) serve(what string, fn func() error) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			m.lg.Error("server stopped", zap.String("server", what), zap.Error(err))
		}
	}()
}

// Stop shuts the member down and waits for every goroutine it started.
func (m *Member) Stop() {
	m.cancel()
	m.shutdownOnce.Do(m.shutdown)
	<-m.done
}

func (m *Member) shutdown() {
	if m.grpcServer != nil {
		stopped := make(chan struct{})
		go func() {
			m.grpcServer.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			m.grpcServer.Stop()
			<-stopped
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if m.httpServer != nil {
		_ = m.httpServer.Shutdown(ctx)
	}
	if m.metricsServer != nil {
		_ = m.metricsServer.Shutdown(ctx)
	}
	for _, l := range m.metricsLns {
		_ = l.Close()
	}
	if m.gatewayConn != nil {
		_ = m.gatewayConn.Close()
	}
	for _, l := range m.clientLns {
		_ = l.Close()
	}
	if m.node != nil {
		m.node.Stop()
	}
	if m.transport != nil {
		_ = m.transport.Close()
	}
	if m.peerServer != nil {
		_ = m.peerServer.Close()
	}
	for _, l := range m.peerLns {
		_ = l.Close()
	}
	if m.compactor != nil {
		m.compactor.stop()
	}
	m.wg.Wait()
	if m.auth != nil {
		m.auth.Close()
	}
	if m.engine != nil {
		if err := m.engine.Close(); err != nil {
			m.lg.Error("close storage", zap.Error(err))
		}
	}
	close(m.done)
}

// waitApplied waits until this member applied the raft entry at index (a simple token names the
// entry that created it).
func (m *Member) waitApplied(ctx context.Context, index uint64) error {
	if m.node == nil {
		return raftnode.ErrStopped
	}
	ctx, cancel := context.WithTimeout(ctx, m.node.RequestTimeout())
	defer cancel()
	return m.node.WaitApplied(ctx, index)
}

// Process implements transport.Raft.
func (m *Member) Process(ctx context.Context, msg *raftpb.Message) error {
	return m.node.Process(ctx, msg)
}

// ReportUnreachable implements transport.Raft.
func (m *Member) ReportUnreachable(id uint64) { m.node.ReportUnreachable(id) }

// ReportSnapshot implements transport.Raft.
func (m *Member) ReportSnapshot(id uint64, status raft.SnapshotStatus) {
	m.node.ReportSnapshot(id, status)
}

// snapshotter streams state-machine snapshots for the transport.
type snapshotter struct{ e *storage.Engine }

func (s snapshotter) WriteSnapshot(ctx context.Context, _ *raftpb.Message, w io.Writer) error {
	_, err := s.e.WriteSnapshot(ctx, w)
	return err
}

func (s snapshotter) ReceiveSnapshot(ctx context.Context, msg *raftpb.Message, r io.Reader) error {
	return s.e.ReceiveSnapshot(ctx, msg.GetSnapshot().GetMetadata().GetIndex(), r)
}
