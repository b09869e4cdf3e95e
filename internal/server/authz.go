package server

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/ordo-db/ordo/internal/apply"
	"github.com/ordo-db/ordo/internal/auth"
)

// readChecked serves a read as etcd does with authentication on: after the linearizable
// barrier (unless serializable), chk decides with the request's credentials whether the user may
// read; once read, the answer is dropped for "revision of auth store is old" if users, roles
// or permissions changed meanwhile.
func (m *Member) readChecked(ctx context.Context, serializable bool, chk func(*auth.Info) error, fn func(viewRW) error) error {
	if !serializable {
		if err := m.linearize(ctx); err != nil {
			return err
		}
	}
	ai, err := m.auth.InfoFromContext(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		ai = &auth.Info{}
	}
	if err := chk(ai); err != nil {
		return err
	}
	if err := m.read(ctx, true, fn); err != nil {
		return err
	}
	if ai.Revision != 0 && ai.Revision != m.auth.Revision() {
		return rpctypes.ErrGRPCAuthOldRevision
	}
	return nil
}

// leaseKeys lists the keys attached to a lease, as stored now.
func (m *Member) leaseKeys(id int64) ([][]byte, error) { return m.leases.Keys(m.engine.DB, id) }

// checkLeaseKeys is etcd's check of lease requests that concern the lease's keys: with
// authentication on, the request must carry credentials, and unless they are a root user's,
// the user must have perm on every key attached to lease id (write for keep-alives, read
// for TimeToLive with keys). It returns the auth revision it checked at.
func (m *Member) checkLeaseKeys(ctx context.Context, id int64, write bool) (uint64, error) {
	rev := m.auth.Revision()
	if !m.auth.Enabled() {
		return rev, nil
	}
	ai, err := m.auth.InfoFromContext(ctx)
	if err != nil {
		return rev, err
	}
	if ai == nil {
		return rev, rpctypes.ErrGRPCUserEmpty
	}
	if m.auth.CheckAdmin(ai) == nil {
		return rev, nil
	}
	keys, err := m.leaseKeys(id)
	if err != nil {
		return rev, err
	}
	for _, k := range keys {
		if write {
			err = m.auth.CheckPut(ai, k)
		} else {
			err = m.auth.CheckRange(ai, k, nil)
		}
		if err != nil {
			return rev, err
		}
	}
	return rev, nil
}

// checkLeasesList is etcd's check of LeaseLeases: a root user, or one that may read every key
// attached to any lease.
func (m *Member) checkLeasesList(ctx context.Context) error {
	if !m.auth.Enabled() {
		return nil
	}
	rev := m.auth.Revision()
	ai, err := m.auth.InfoFromContext(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		return rpctypes.ErrGRPCUserEmpty
	}
	if m.auth.CheckAdmin(ai) == nil {
		return nil
	}
	for _, id := range m.leases.IDs() {
		keys, err := m.leaseKeys(id)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := m.auth.CheckRange(ai, k, nil); err != nil {
				return err
			}
		}
	}
	if rev != m.auth.Revision() {
		return rpctypes.ErrGRPCAuthOldRevision
	}
	return nil
}

// checkTxnRead checks a read-only transaction.
func (m *Member) checkTxnRead(r *pb.TxnRequest) func(*auth.Info) error {
	return func(ai *auth.Info) error { return apply.CheckTxnAuth(m.auth, ai, m.leaseKeys, r) }
}

// watchCancelReason is the cancel reason of a watch its user may not make, as etcd words it:
// the full text of the gRPC error.
func watchCancelReason(err error) string {
	switch err {
	case rpctypes.ErrGRPCInvalidAuthToken, rpctypes.ErrGRPCAuthOldRevision, rpctypes.ErrGRPCUserEmpty:
		return err.Error()
	}
	return rpctypes.ErrGRPCPermissionDenied.Error()
}
