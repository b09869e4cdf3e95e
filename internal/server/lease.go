package server

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/lease"
)

// leaseServer is etcd's Lease service.
type leaseServer struct {
	pb.UnimplementedLeaseServer
	m *Member
}

// minLeaseTTL is etcd's smallest TTL: one and a half election timeouts, in whole seconds.
func (m *Member) minLeaseTTL() int64 {
	ticks := int64(m.cfg.ElectionTimeout / m.cfg.HeartbeatInterval)
	return int64(math.Ceil((time.Duration(3*ticks/2) * m.cfg.HeartbeatInterval).Seconds()))
}

func (s *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if err := s.m.auth.RequireUser(ctx); err != nil {
		return nil, err
	}
	if r.TTL > lease.MaxTTL {
		return nil, rpctypes.ErrGRPCLeaseTTLTooLarge
	}
	req := &pb.LeaseGrantRequest{ID: r.ID, TTL: max(r.TTL, s.m.minLeaseTTL())}
	if req.ID == 0 {
		req.ID = int64(s.m.reqIDs.id() & math.MaxInt64)
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{LeaseGrant: req})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*pb.LeaseGrantResponse)
	s.m.header(resp.Header)
	return resp, nil
}

func (s *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if err := s.m.auth.RequireUser(ctx); err != nil {
		return nil, err
	}
	res, err := s.m.propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: r.ID}})
	if err != nil {
		return nil, err
	}
	resp := res.Resp.(*pb.LeaseRevokeResponse)
	s.m.header(resp.Header)
	return resp, nil
}

func (s *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := s.m.auth.RequireUser(ctx); err != nil {
		return nil, err
	}
	var authRev uint64
	if r.Keys {
		// As in etcd, the attached keys are checked only when they are asked for.
		rev, err := s.m.checkLeaseKeys(ctx, r.ID, false)
		if err != nil {
			return nil, err
		}
		authRev = rev
	}
	resp, err := s.timeToLive(ctx, r)
	if err != nil {
		return nil, err
	}
	if r.Keys && s.m.auth.Enabled() && authRev != s.m.auth.Revision() {
		return nil, rpctypes.ErrGRPCAuthOldRevision
	}
	return resp, nil
}

func (s *leaseServer) timeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := s.m.linearize(ctx); err != nil {
		return nil, err
	}
	l, ok := s.m.leases.Lookup(r.ID)
	if !ok {
		return &pb.LeaseTimeToLiveResponse{Header: s.m.header(&pb.ResponseHeader{Revision: s.m.kv.CurrentRev()}), ID: r.ID, TTL: -1}, nil
	}
	left, _ := s.m.leases.Remaining(r.ID)
	resp := &pb.LeaseTimeToLiveResponse{
		Header:     s.m.header(&pb.ResponseHeader{Revision: s.m.kv.CurrentRev()}),
		ID:         r.ID,
		TTL:        int64(left.Seconds()),
		GrantedTTL: l.TTL,
	}
	if r.Keys {
		keys, err := s.m.leases.Keys(s.m.engine.DB, r.ID)
		if err != nil {
			return nil, err
		}
		resp.Keys = keys
	}
	return resp, nil
}

func (s *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if err := s.m.linearize(ctx); err != nil {
		return nil, err
	}
	if err := s.m.checkLeasesList(ctx); err != nil {
		return nil, err
	}
	ids := s.m.leases.IDs()
	resp := &pb.LeaseLeasesResponse{Header: s.m.header(&pb.ResponseHeader{Revision: s.m.kv.CurrentRev()})}
	for _, id := range ids {
		resp.Leases = append(resp.Leases, &pb.LeaseStatus{ID: id})
	}
	return resp, nil
}

// LeaseKeepAlive renews leases as the client asks, answering each request once its renewal is
// committed; any member may take keep-alives, as the renewal is replicated through raft. The
// stream keeps reading while earlier renewals are in flight, so one client can keep many
// leases alive; answers go out in request order.
func (s *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(s.m.ctx, cancel) // a stopping member ends its streams
	defer stop()
	type pending struct {
		id    int64
		batch *renewBatch
		err   error // the user may not keep the lease alive: the stream ends with err
	}
	queue := make(chan pending, 4096)
	go func() {
		defer close(queue)
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			p := pending{id: req.ID}
			if err := s.m.checkRenew(ctx, req.ID); err != nil {
				p.err = err
			} else {
				p.batch = s.m.renewer.add(req.ID)
			}
			select {
			case queue <- p:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var p pending
		var ok bool
		select {
		case p, ok = <-queue:
			if !ok {
				return nil
			}
		case <-ctx.Done():
			return s.m.streamEndErr()
		}
		if p.err != nil {
			return p.err
		}
		select {
		case <-p.batch.done:
		case <-ctx.Done():
			return s.m.streamEndErr()
		}
		if p.batch.err != nil {
			return p.batch.err
		}
		resp := &pb.LeaseKeepAliveResponse{Header: s.m.header(&pb.ResponseHeader{Revision: s.m.kv.CurrentRev()}), ID: p.id}
		if l, ok := s.m.leases.Lookup(p.id); ok {
			resp.TTL = l.TTL
		}
		if err := stream.Send(resp); err != nil {
			return nil
		}
	}
}

// checkRenew is etcd's check of a keep-alive: with authentication on, a root user or one that
// may write every key attached to the lease.
func (m *Member) checkRenew(ctx context.Context, id int64) error {
	rev, err := m.checkLeaseKeys(ctx, id, true)
	if err != nil {
		return err
	}
	if m.auth.Enabled() && rev != m.auth.Revision() {
		return rpctypes.ErrGRPCAuthOldRevision
	}
	return nil
}

// streamEndErr is what a stream handler returns when it ends early: Unavailable while the
// member stops (clients retry elsewhere), nothing when the client went away.
func (m *Member) streamEndErr() error {
	if m.ctx.Err() != nil {
		return rpctypes.ErrGRPCStopped
	}
	return nil
}

// renewer batches keep-alives from every stream into one raft proposal per round: while one
// round is being committed, the next collects.
type renewer struct {
	m    *Member
	mu   sync.Mutex
	next *renewBatch
	kick chan struct{}
}

type renewBatch struct {
	ids  map[int64]struct{}
	done chan struct{} // closed once the batch is committed; err is set before
	err  error
}

func newRenewBatch() *renewBatch {
	return &renewBatch{ids: map[int64]struct{}{}, done: make(chan struct{})}
}

func newRenewer(m *Member) *renewer {
	return &renewer{m: m, next: newRenewBatch(), kick: make(chan struct{}, 1)}
}

// add queues a renewal of id and returns the batch that will carry it.
func (r *renewer) add(id int64) *renewBatch {
	r.mu.Lock()
	b := r.next
	b.ids[id] = struct{}{}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return b
}

func (r *renewer) run() {
	defer r.m.wg.Done()
	for {
		select {
		case <-r.kick:
		case <-r.m.ctx.Done():
			return
		}
		r.mu.Lock()
		b := r.next
		r.next = newRenewBatch()
		r.mu.Unlock()
		if len(b.ids) == 0 {
			close(b.done)
			continue
		}
		cp := &pb.LeaseCheckpointRequest{}
		for id := range b.ids {
			cp.Checkpoints = append(cp.Checkpoints, &pb.LeaseCheckpoint{ID: id})
		}
		b.err = r.proposeRenewals(cp)
		close(b.done)
	}
}

// proposeRenewals commits a batch of keep-alives. Renewals are idempotent, so an attempt that
// got lost with a failed leader is simply proposed again after an election timeout or two,
// instead of leaving every waiting keep-alive to the request timeout.
func (r *renewer) proposeRenewals(cp *pb.LeaseCheckpointRequest) error {
	deadline := time.Now().Add(r.m.node.RequestTimeout())
	for {
		attempt := min(2*r.m.cfg.ElectionTimeout, time.Until(deadline))
		ctx, cancel := context.WithTimeout(r.m.ctx, attempt)
		_, err := r.m.propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: cp})
		cancel()
		if err == nil || r.m.ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		if !errors.Is(err, rpctypes.ErrGRPCTimeout) && !errors.Is(err, rpctypes.ErrGRPCNoLeader) {
			return err
		}
	}
}

// runLeaseClock runs on every member and acts while it leads: it advances the lease clock
// every lease.TickInterval and revokes expired leases through raft, at most
// leaseRevokeRate a second so that a mass expiry does not crowd out writes. A member that
// stops leading stops at once: it checks leadership before every proposal.
func (m *Member) runLeaseClock() {
	defer m.wg.Done()
	ticker := time.NewTicker(lease.TickInterval)
	defer ticker.Stop()
	sem := make(chan struct{}, 64)
	var inflight sync.Map
	leading := false
	var leadTerm uint64
	for {
		select {
		case <-ticker.C:
		case <-m.ctx.Done():
			return
		}
		if m.node.Leader() != m.id {
			if leading {
				leading = false
				m.leases.Follow()
			}
			continue
		}
		// A member that lost and won leadership between two checks leads in a new term: it
		// starts leading again, so that the election is not counted either.
		if term := m.node.Term(); !leading || term != leadTerm {
			leading, leadTerm = true, term
			m.leases.Lead()
		}
		now := m.leases.Now()
		ctx, cancel := context.WithTimeout(m.ctx, m.node.RequestTimeout())
		_, err := m.propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{
			Checkpoints: []*pb.LeaseCheckpoint{{ID: 0, Remaining_TTL: now}}}})
		cancel()
		if err != nil {
			continue
		}
		budget := int(leaseRevokeRate * lease.TickInterval / time.Second)
		for _, l := range m.leases.Expired(m.leases.Now(), budget) {
			id := l.ID
			if _, busy := inflight.LoadOrStore(id, true); busy {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-m.ctx.Done():
				return
			}
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				defer func() { <-sem; inflight.Delete(id) }()
				if m.node.Leader() != m.id {
					return
				}
				ctx, cancel := context.WithTimeout(m.ctx, m.node.RequestTimeout())
				defer cancel()
				// Expire, not revoke: applied only if no keep-alive renewed the lease since
				// this member saw it expire.
				_, err := m.propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{
					Checkpoints: []*pb.LeaseCheckpoint{{ID: l.ID, Remaining_TTL: -l.Deadline}}}})
				if err != nil && !errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) && m.ctx.Err() == nil {
					m.lg.Warn("failed to revoke expired lease", zap.Int64("lease-id", id), zap.Error(err))
				}
			}()
		}
	}
}

// leaseRevokeRate bounds the expired leases revoked per second.
const leaseRevokeRate = 1000
