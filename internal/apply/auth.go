package apply

import (
	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ordo-db/ordo/internal/auth"
)

// LeaseKeys lists the keys attached to a lease (none for a lease that does not exist).
type LeaseKeys func(id int64) ([][]byte, error)

// authInfo is who the proposer of r found the request to come from.
func authInfo(r *pb.InternalRaftRequest) *auth.Info {
	if r.Header == nil {
		return &auth.Info{}
	}
	return &auth.Info{Username: r.Header.Username, Revision: r.Header.AuthRevision}
}

// needsAdmin lists the requests only a root user may make (AuthStatus, UserGet and RoleGet
// aside: anyone may ask the status, a user may get itself and the roles it has).
func needsAdmin(r *pb.InternalRaftRequest) bool {
	return r.AuthEnable != nil || r.AuthDisable != nil ||
		r.AuthUserAdd != nil || r.AuthUserDelete != nil || r.AuthUserChangePassword != nil ||
		r.AuthUserGrantRole != nil || r.AuthUserRevokeRole != nil || r.AuthUserList != nil ||
		r.AuthRoleAdd != nil || r.AuthRoleGrantPermission != nil || r.AuthRoleRevokePermission != nil ||
		r.AuthRoleDelete != nil || r.AuthRoleList != nil
}

// authorize checks, as the entry is applied (so on every member, against the auth state at this
// point of the log), that the request's user may make it: etcd checks writes here rather than
// when they are proposed, so that a permission revoked meanwhile is never bypassed.
func (a *Applier) authorize(b *pebble.Batch, r *pb.InternalRaftRequest) error {
	as := a.cfg.Auth
	if as == nil || !as.Enabled() {
		return nil
	}
	ai := authInfo(r)
	keys := func(id int64) ([][]byte, error) { return a.cfg.Leases.Keys(b, id) }
	switch {
	case needsAdmin(r):
		return as.CheckAdmin(ai)
	case r.Put != nil:
		return checkPutAuth(as, ai, keys, r.Put)
	case r.DeleteRange != nil:
		return checkDeleteAuth(as, ai, r.DeleteRange)
	case r.Txn != nil:
		return CheckTxnAuth(as, ai, keys, r.Txn)
	case r.LeaseRevoke != nil:
		return checkLeaseWrites(as, ai, keys, r.LeaseRevoke.ID)
	case r.AuthUserGet != nil:
		if err := as.CheckAdmin(ai); err != nil && r.AuthUserGet.Name != ai.Username {
			return err
		}
	case r.AuthRoleGet != nil:
		if err := as.CheckAdmin(ai); err != nil && !as.HasRole(ai.Username, r.AuthRoleGet.Role) {
			return err
		}
	}
	return nil
}

// checkPutAuth: writing the key, writing every key already attached to the lease the put
// attaches (a user must not attach keys to a lease it could not revoke), and reading the key
// when the previous value is asked for.
func checkPutAuth(as *auth.Store, ai *auth.Info, keys LeaseKeys, r *pb.PutRequest) error {
	if err := as.CheckPut(ai, r.Key); err != nil {
		return err
	}
	if r.Lease != 0 {
		if err := checkLeaseWrites(as, ai, keys, r.Lease); err != nil {
			return err
		}
	}
	if r.PrevKv {
		return as.CheckRange(ai, r.Key, nil)
	}
	return nil
}

// checkDeleteAuth: writing the range, and reading it when the deleted values are asked for.
func checkDeleteAuth(as *auth.Store, ai *auth.Info, r *pb.DeleteRangeRequest) error {
	if err := as.CheckDeleteRange(ai, r.Key, r.RangeEnd); err != nil {
		return err
	}
	if r.PrevKv {
		return as.CheckRange(ai, r.Key, r.RangeEnd)
	}
	return nil
}

// checkLeaseWrites: a root user, or one that may write every key attached to the lease.
func checkLeaseWrites(as *auth.Store, ai *auth.Info, keys LeaseKeys, id int64) error {
	if as.CheckAdmin(ai) == nil {
		return nil
	}
	ks, err := keys(id)
	if err != nil {
		return err
	}
	for _, k := range ks {
		if err := as.CheckPut(ai, k); err != nil {
			return err
		}
	}
	return nil
}

// CheckTxnAuth checks a transaction as etcd does, whichever branch it will take: reading every
// compared key or range, and every operation of both branches (nested transactions included).
func CheckTxnAuth(as *auth.Store, ai *auth.Info, keys LeaseKeys, r *pb.TxnRequest) error {
	for _, c := range r.Compare {
		if err := as.CheckRange(ai, c.Key, c.RangeEnd); err != nil {
			return err
		}
	}
	if err := checkOpsAuth(as, ai, keys, r.Success); err != nil {
		return err
	}
	return checkOpsAuth(as, ai, keys, r.Failure)
}

func checkOpsAuth(as *auth.Store, ai *auth.Info, keys LeaseKeys, ops []*pb.RequestOp) error {
	for _, op := range ops {
		var err error
		switch tv := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			if tv.RequestRange != nil {
				err = as.CheckRange(ai, tv.RequestRange.Key, tv.RequestRange.RangeEnd)
			}
		case *pb.RequestOp_RequestPut:
			if tv.RequestPut != nil {
				err = checkPutAuth(as, ai, keys, tv.RequestPut)
			}
		case *pb.RequestOp_RequestDeleteRange:
			if d := tv.RequestDeleteRange; d != nil {
				if d.PrevKv {
					err = as.CheckRange(ai, d.Key, d.RangeEnd)
				}
				if err == nil {
					err = as.CheckDeleteRange(ai, d.Key, d.RangeEnd)
				}
			}
		case *pb.RequestOp_RequestTxn:
			if tv.RequestTxn != nil {
				err = CheckTxnAuth(as, ai, keys, tv.RequestTxn)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// applyAuth applies the auth requests; it reports false for any other request. Responses carry
// a header with the store's revision, as etcd's do.
func (a *Applier) applyAuth(b *pebble.Batch, r *pb.InternalRaftRequest, index uint64, rev int64) (resp proto.Message, ok bool, err error) {
	as := a.cfg.Auth
	if as == nil {
		return nil, false, nil
	}
	switch {
	case r.Authenticate != nil:
		resp, err = msg(as.ApplyAuthenticate(r.Authenticate, index))
	case r.AuthEnable != nil:
		resp, err = &pb.AuthEnableResponse{}, as.ApplyAuthEnable(b)
	case r.AuthDisable != nil:
		resp, err = &pb.AuthDisableResponse{}, as.ApplyAuthDisable(b)
	case r.AuthStatus != nil:
		resp = as.Status()
	case r.AuthUserAdd != nil:
		resp, err = msg(as.ApplyUserAdd(b, r.AuthUserAdd))
	case r.AuthUserDelete != nil:
		resp, err = msg(as.ApplyUserDelete(b, r.AuthUserDelete))
	case r.AuthUserChangePassword != nil:
		resp, err = msg(as.ApplyUserChangePassword(b, r.AuthUserChangePassword))
	case r.AuthUserGrantRole != nil:
		resp, err = msg(as.ApplyUserGrantRole(b, r.AuthUserGrantRole))
	case r.AuthUserRevokeRole != nil:
		resp, err = msg(as.ApplyUserRevokeRole(b, r.AuthUserRevokeRole))
	case r.AuthUserGet != nil:
		resp, err = msg(as.UserGet(r.AuthUserGet))
	case r.AuthUserList != nil:
		resp = as.UserList()
	case r.AuthRoleAdd != nil:
		resp, err = msg(as.ApplyRoleAdd(b, r.AuthRoleAdd))
	case r.AuthRoleDelete != nil:
		resp, err = msg(as.ApplyRoleDelete(b, r.AuthRoleDelete))
	case r.AuthRoleGrantPermission != nil:
		resp, err = msg(as.ApplyRoleGrantPermission(b, r.AuthRoleGrantPermission))
	case r.AuthRoleRevokePermission != nil:
		resp, err = msg(as.ApplyRoleRevokePermission(b, r.AuthRoleRevokePermission))
	case r.AuthRoleGet != nil:
		resp, err = msg(as.RoleGet(r.AuthRoleGet))
	case r.AuthRoleList != nil:
		resp = as.RoleList()
	default:
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	setHeader(resp, &pb.ResponseHeader{Revision: rev})
	return resp, true, nil
}

// msg turns a typed response and its error into an untyped one (nil on error).
func msg[T proto.Message](m T, err error) (proto.Message, error) {
	if err != nil {
		return nil, err
	}
	return m, nil
}

// setHeader sets the "header" field every etcd response message has.
func setHeader(m proto.Message, h *pb.ResponseHeader) {
	r := m.ProtoReflect()
	if fd := r.Descriptor().Fields().ByName("header"); fd != nil {
		r.Set(fd, protoreflect.ValueOfMessage(h.ProtoReflect()))
	}
}
