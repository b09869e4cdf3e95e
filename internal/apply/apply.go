package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/auth"
	"github.com/ordo-db/ordo/internal/lease"
	"github.com/ordo-db/ordo/internal/mvcc"
	"github.com/ordo-db/ordo/internal/storage"
)

// Config wires an Applier.
type Config struct {
	Engine *storage.Engine
	KV     *mvcc.Store
	Leases *lease.Store
	// Auth is the auth state; nil serves no auth requests and checks no permissions.
	Auth   *auth.Store
	Logger *zap.Logger
	// OnMembers is called after a batch that changed the membership.
	OnMembers func()
	// OnCompact is called after a batch that scheduled a compaction at rev; done must be
	// closed once the physical compaction has finished.
	OnCompact func(rev int64, done chan struct{})
	// OnPublish is called with the events of every batch once readers can see them, and the
	// store's revision after it. It must not block.
	OnPublish func(evs []mvcc.Event, rev int64)
	// OnRestore is called after the state was replaced by a snapshot.
	OnRestore func()
}

// Applier applies committed raft entries. Apply is called from one goroutine only.
type Applier struct {
	cfg     Config
	lg      *zap.Logger
	applied uint64 // the applied index as stored; entries at or below it are skipped
	waiters waiters
	alarms  alarmSet
}

// New creates an Applier over the current state.
func New(cfg Config) (*Applier, error) {
	a := &Applier{cfg: cfg, lg: cfg.Logger}
	if err := a.Restore(); err != nil {
		return nil, err
	}
	return a, nil
}

// Restore reloads the applied index and the MVCC store after the state was replaced.
func (a *Applier) Restore() error {
	applied, _, err := storage.Applied(a.cfg.Engine.DB)
	if err != nil {
		return err
	}
	a.applied = applied
	if err := a.alarms.load(a.cfg.Engine.DB); err != nil {
		return err
	}
	if err := a.cfg.KV.Reload(); err != nil {
		return fmt.Errorf("reload mvcc: %w", err)
	}
	if err := a.cfg.Leases.Reload(); err != nil {
		return fmt.Errorf("reload leases: %w", err)
	}
	if a.cfg.Auth != nil {
		if err := a.cfg.Auth.Reload(); err != nil {
			return fmt.Errorf("reload auth: %w", err)
		}
	}
	if a.cfg.OnRestore != nil {
		a.cfg.OnRestore()
	}
	return nil
}

type proposed struct {
	id  uint64
	res Result
}

// Apply applies ents in one batch that also records the applied index, then hands results to
// their proposers.
func (a *Applier) Apply(ents []*raftpb.Entry, confChange func(raftpb.ConfChangeI) *raftpb.ConfState) error {
	b := a.cfg.Engine.DB.NewIndexedBatch()
	defer b.Close()
	w := a.cfg.KV.NewWriter(b)
	published := false
	defer func() {
		if !published {
			_ = w.Close()
		}
	}()
	var (
		results        []proposed
		membersChanged bool
		compactRev     int64
		compactDone    chan struct{}
		last, lastTerm uint64
	)
	for _, ent := range ents {
		skip := ent.GetIndex() <= a.applied
		switch ent.GetType() {
		case raftpb.EntryNormal:
			if skip || len(ent.GetData()) == 0 {
				break
			}
			req := &pb.InternalRaftRequest{}
			if err := proto.Unmarshal(ent.GetData(), req); err != nil {
				return fmt.Errorf("%w: raft entry %d: %v", storage.ErrCorrupt, ent.GetIndex(), err)
			}
			res := a.applyRequest(b, w, req, ent.GetIndex())
			if res.Err != nil && !isClientError(res.Err) {
				return fmt.Errorf("apply entry %d: %w", ent.GetIndex(), res.Err)
			}
			if req.Compaction != nil && res.Err == nil {
				compactRev = req.Compaction.Revision
				compactDone = make(chan struct{})
				if req.Compaction.Physical {
					res.Physical = compactDone
				}
			}
			if req.ClusterMemberAttrSet != nil {
				membersChanged = true
			}
			results = append(results, proposed{requestID(req), res})
		case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
			changed, err := a.applyConfChange(b, ent, confChange, skip)
			if err != nil {
				return err
			}
			membersChanged = membersChanged || changed
		}
		if !skip {
			last, lastTerm = ent.GetIndex(), ent.GetTerm()
		}
	}
	if last == 0 {
		return nil
	}
	if err := storage.SetApplied(b, last, lastTerm); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit apply batch: %w", err)
	}
	a.applied = last
	evs := w.Events()
	a.cfg.KV.Publish(w)
	published = true
	if a.cfg.OnPublish != nil {
		a.cfg.OnPublish(evs, a.cfg.KV.CurrentRev())
	}
	if membersChanged && a.cfg.OnMembers != nil {
		a.cfg.OnMembers()
	}
	if compactDone != nil && a.cfg.OnCompact != nil {
		a.cfg.OnCompact(compactRev, compactDone)
	}
	for _, p := range results {
		a.trigger(p.id, p.res)
	}
	return nil
}

// isClientError tells a request's own error (an etcd gRPC error, sent back to the client) from
// a failure of the member itself.
func isClientError(err error) bool {
	_, ok := status.FromError(err)
	return ok
}

func requestID(r *pb.InternalRaftRequest) uint64 {
	if r.Header != nil && r.Header.ID != 0 {
		return r.Header.ID
	}
	return r.ID
}

// applyRequest applies one client request as one MVCC transaction.
func (a *Applier) applyRequest(b *pebble.Batch, w *mvcc.Writer, r *pb.InternalRaftRequest, index uint64) Result {
	ctx := context.Background()
	rw := writerRW{w: w, b: b, leases: a.cfg.Leases}
	exists := a.cfg.Leases.Exists
	var res Result
	if err := a.refuseCapped(r); err != nil {
		res.Err = err
		return res
	}
	if err := a.authorize(b, r); err != nil {
		res.Err = err
		return res
	}
	if resp, ok, err := a.applyAuth(b, r, index, rw.Rev()); ok {
		res.Resp, res.Err = resp, err
		return res
	}
	switch {
	case r.Put != nil:
		if err := checkPut(rw, exists, r.Put); err != nil {
			res.Err = err
			break
		}
		res.Resp, res.Err = put(rw, r.Put)
	case r.DeleteRange != nil:
		res.Resp, res.Err = deleteRange(rw, r.DeleteRange)
	case r.Txn != nil:
		res.Resp, res.Err = Txn(ctx, rw, exists, r.Txn)
	case r.Compaction != nil:
		if err := w.Compact(r.Compaction.Revision); err != nil {
			res.Err = mvccErr(err)
			break
		}
		res.Resp = &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: rw.Rev()}}
	case r.LeaseGrant != nil:
		l, err := a.cfg.Leases.Grant(b, r.LeaseGrant.ID, r.LeaseGrant.TTL)
		if errors.Is(err, lease.ErrExists) {
			res.Err = rpctypes.ErrGRPCLeaseExist
			break
		}
		res.Err = err
		res.Resp = &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: rw.Rev()}, ID: l.ID, TTL: l.TTL}
	case r.LeaseRevoke != nil:
		res.Resp, res.Err = a.revoke(b, rw, r.LeaseRevoke.ID)
	case r.LeaseCheckpoint != nil:
		res.Resp, res.Err = a.checkpoint(b, rw, r.LeaseCheckpoint)
	case r.Alarm != nil:
		res.Resp, res.Err = a.applyAlarm(b, r.Alarm, rw.Rev())
	case r.ClusterMemberAttrSet != nil:
		res.Err = a.setMemberAttrs(b, r.ClusterMemberAttrSet.Member_ID, r.ClusterMemberAttrSet.MemberAttributes.GetName(), r.ClusterMemberAttrSet.MemberAttributes.GetClientUrls())
	default:
		res.Err = errors.New("apply: unsupported request")
	}
	w.EndTxn()
	return res
}

// revoke deletes every key attached to lease id in one revision, then the lease.
func (a *Applier) revoke(b *pebble.Batch, rw writerRW, id int64) (*pb.LeaseRevokeResponse, error) {
	if !a.cfg.Leases.Exists(id) {
		return nil, rpctypes.ErrGRPCLeaseNotFound
	}
	keys, err := a.cfg.Leases.Keys(b, id)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if _, err := rw.DeleteRange(k, nil); err != nil {
			return nil, err
		}
	}
	if err := a.cfg.Leases.Remove(b, id); err != nil {
		return nil, err
	}
	return &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: rw.Rev()}}, nil
}

// checkpoint applies the lease entries Ordo carries in etcd's LeaseCheckpointRequest:
//   - ID 0: a lease clock tick, the clock value (ms) in Remaining_TTL;
//   - Remaining_TTL < 0: the leader found lease ID expired at deadline -Remaining_TTL; it is
//     revoked only if its deadline is still that one (no keep-alive renewed it meanwhile);
//   - otherwise: a keep-alive, the lease's TTL starts again now.
func (a *Applier) checkpoint(b *pebble.Batch, rw writerRW, r *pb.LeaseCheckpointRequest) (*pb.LeaseCheckpointResponse, error) {
	for _, cp := range r.Checkpoints {
		if cp.ID == 0 {
			if err := a.cfg.Leases.Tick(b, cp.Remaining_TTL); err != nil {
				return nil, err
			}
			continue
		}
		if cp.Remaining_TTL < 0 {
			if l, ok := a.cfg.Leases.Lookup(cp.ID); ok && l.Deadline == -cp.Remaining_TTL {
				if _, err := a.revoke(b, rw, cp.ID); err != nil {
					return nil, err
				}
			}
			continue
		}
		if _, err := a.cfg.Leases.Renew(b, cp.ID); err != nil && !errors.Is(err, lease.ErrNotFound) {
			return nil, err
		}
	}
	return &pb.LeaseCheckpointResponse{Header: &pb.ResponseHeader{}}, nil
}

// writerRW adapts the MVCC writer to ReadWriter and keeps lease attachments in step with
// the keys it writes and deletes.
type writerRW struct {
	w      *mvcc.Writer
	b      *pebble.Batch
	leases *lease.Store
}

func (rw writerRW) Range(ctx context.Context, key, end []byte, ro mvcc.RangeOptions) (*mvcc.RangeResult, error) {
	return rw.w.Range(ctx, key, end, ro)
}
func (rw writerRW) Rev() int64        { return rw.w.TxnRev() }
func (rw writerRW) CompactRev() int64 { return rw.w.CompactRev() }

func (rw writerRW) Put(key, value []byte, leaseID int64) (*mvccpb.KeyValue, error) {
	prev, err := rw.w.Put(key, value, leaseID)
	if err != nil {
		return nil, err
	}
	if prev != nil && prev.Lease != 0 && prev.Lease != leaseID {
		if err := rw.leases.Detach(rw.b, prev.Lease, key); err != nil {
			return nil, err
		}
	}
	if leaseID != 0 {
		if err := rw.leases.Attach(rw.b, leaseID, key); err != nil {
			return nil, err
		}
	}
	return prev, nil
}

func (rw writerRW) DeleteRange(key, end []byte) ([]*mvccpb.KeyValue, error) {
	deleted, err := rw.w.DeleteRange(key, end)
	if err != nil {
		return nil, err
	}
	for _, kv := range deleted {
		if kv.Lease != 0 {
			if err := rw.leases.Detach(rw.b, kv.Lease, kv.Key); err != nil {
				return nil, err
			}
		}
	}
	return deleted, nil
}
