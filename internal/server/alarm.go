package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/storage"
)

// Space limits. See docs/operations-disk.md.
const (
	// The free space a member keeps on its data dir's filesystem is --disk-reserve-bytes
	// (config.DefaultDiskReserveBytes explains its default).

	// diskCheckInterval bounds how often the free space is read (statfs, a cheap call).
	diskCheckInterval = 100 * time.Millisecond
	// sizeCheckInterval bounds how often the database size is recomputed from Pebble's
	// metrics; a burst of writes within it may pass the quota by that much.
	sizeCheckInterval = 100 * time.Millisecond

	// Request costs, as etcd estimates them for its quota check.
	kvOverhead    = 256
	leaseOverhead = 64
)

// spaceGuard decides whether this member has room for a write of a given cost: the database
// must stay under the backend quota and the filesystem must keep the reserve free. Both
// measurements are cached (sizeCheckInterval, diskCheckInterval) so the check costs a mutex on
// the write path; between two size measurements the cost of every admitted write is added to
// the last one, so a burst cannot pass the quota unnoticed.
type spaceGuard struct {
	engine  *storage.Engine
	quota   int64  // bytes; negative: no quota
	reserve uint64 // bytes; 0: free space is not checked
	now     func() time.Time
	lg      *zap.Logger

	mu struct {
		sync.Mutex
		sizeAt, diskAt time.Time
		size           int64  // measured database size
		admitted       int64  // cost of the writes admitted since size was measured
		avail          uint64 // free bytes measured on the filesystem
		diskAdmitted   uint64 // cost of the writes admitted since avail was measured
	}
}

func newSpaceGuard(e *storage.Engine, quota int64, reserve uint64, lg *zap.Logger) *spaceGuard {
	return &spaceGuard{engine: e, quota: quota, reserve: reserve, now: time.Now, lg: lg}
}

// check returns nil if a write of cost bytes fits, or the reason it does not.
func (g *spaceGuard) check(cost int) error {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.quota >= 0 {
		if now.Sub(g.mu.sizeAt) >= sizeCheckInterval {
			g.mu.size, g.mu.admitted, g.mu.sizeAt = g.engine.Size(), 0, now
		}
		if size := g.mu.size + g.mu.admitted; size+int64(cost) >= g.quota {
			return fmt.Errorf("database size %d bytes + request %d bytes exceeds the quota of %d bytes (--quota-backend-bytes)", size, cost, g.quota)
		}
	}
	if g.reserve == 0 {
		g.mu.admitted += int64(cost)
		return nil
	}
	if now.Sub(g.mu.diskAt) >= diskCheckInterval {
		u, err := g.engine.DiskUsage()
		if err != nil {
			// Not knowing the free space must not stop writes; Pebble stops the member if a
			// write really fails.
			g.lg.Warn("cannot read free disk space", zap.Error(err))
			u.AvailBytes = ^uint64(0)
		}
		g.mu.avail, g.mu.diskAt, g.mu.diskAdmitted = u.AvailBytes, now, 0
	}
	// Every write lands on disk twice (raft log and state), so that is what it takes from
	// the free space until the next measurement.
	if avail := g.mu.avail - min(g.mu.avail, g.mu.diskAdmitted+2*uint64(cost)); avail < g.reserve {
		return fmt.Errorf("about %d bytes free on the data dir's filesystem, below the reserve of %d bytes", avail, g.reserve)
	}
	g.mu.admitted += int64(cost)
	g.mu.diskAdmitted += 2 * uint64(cost)
	return nil
}

// requestCost estimates the space a request adds, as etcd does: 0 for requests that do not
// write a key or a lease (those always pass the quota).
func requestCost(r *pb.InternalRaftRequest) int {
	switch {
	case r.Put != nil:
		return putCost(r.Put)
	case r.Txn != nil:
		return txnCost(r.Txn)
	case r.LeaseGrant != nil:
		return leaseOverhead
	}
	return 0
}

func putCost(p *pb.PutRequest) int { return kvOverhead + len(p.Key) + len(p.Value) }

// txnCost is the larger of the costs of the two branches, each the sum of its puts.
func txnCost(t *pb.TxnRequest) int {
	branch := func(ops []*pb.RequestOp) int {
		c := 0
		for _, op := range ops {
			switch {
			case op.GetRequestPut() != nil:
				c += putCost(op.GetRequestPut())
			case op.GetRequestTxn() != nil:
				c += txnCost(op.GetRequestTxn())
			}
		}
		return c
	}
	return max(branch(t.Success), branch(t.Failure))
}

// checkSpace refuses a write that does not fit (see spaceGuard) with etcd's NOSPACE error and
// raises the NOSPACE alarm for this member through raft, as etcd does, unless it is raised
// already.
func (m *Member) checkSpace(ctx context.Context, req *pb.InternalRaftRequest) error {
	cost := requestCost(req)
	if cost == 0 || m.space == nil {
		return nil
	}
	reason := m.space.check(cost)
	if reason == nil {
		return nil
	}
	if !m.hasAlarm(pb.AlarmType_NOSPACE) {
		m.lg.Warn("refusing writes: no space; raising the NOSPACE alarm",
			zap.String("local-member-id", fmt.Sprintf("%x", m.id)), zap.String("reason", reason.Error()))
		_, err := m.propose(ctx, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{
			Action: pb.AlarmRequest_ACTIVATE, MemberID: m.id, Alarm: pb.AlarmType_NOSPACE,
		}})
		if err != nil {
			m.lg.Warn("failed to raise the NOSPACE alarm", zap.Error(err))
		}
	}
	return rpctypes.ErrGRPCNoSpace
}

// hasAlarm reports whether this member has an active alarm of type t.
func (m *Member) hasAlarm(t pb.AlarmType) bool {
	for _, a := range m.applier.Alarms() {
		if a.MemberID == m.id && a.Alarm == t {
			return true
		}
	}
	return false
}

// alarmStrings formats the active alarms as etcd lists them in StatusResponse.Errors.
func alarmStrings(alarms []*pb.AlarmMember) []string {
	var out []string
	for _, a := range alarms {
		out = append(out, fmt.Sprintf("memberID:%d alarm:%s ", a.MemberID, a.Alarm))
	}
	return out
}
