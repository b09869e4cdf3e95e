package apply

import (
	"fmt"
	"sort"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/storage"
)

// alarmSet is the in-memory copy of the active alarms stored in the meta keyspace. The apply
// goroutine changes it while it applies an AlarmRequest (before the batch is committed: a
// later entry of the same batch must see the alarm; if the commit fails the member stops), and
// reloads it from storage on Restore. Other goroutines read it through Applier.Alarms.
type alarmSet struct {
	mu struct {
		sync.Mutex
		active map[alarmKey]struct{}
	}
}

type alarmKey struct {
	member uint64
	alarm  pb.AlarmType
}

func (s *alarmSet) load(r pebble.Reader) error {
	list, err := storage.Alarms(r)
	if err != nil {
		return fmt.Errorf("load alarms: %w", err)
	}
	active := make(map[alarmKey]struct{}, len(list))
	for _, a := range list {
		active[alarmKey{a.MemberID, a.Alarm}] = struct{}{}
	}
	s.mu.Lock()
	s.mu.active = active
	s.mu.Unlock()
	return nil
}

// list returns the active alarms of type t (every alarm for AlarmType_NONE), ordered by member
// id then type.
func (s *alarmSet) list(t pb.AlarmType) []*pb.AlarmMember {
	s.mu.Lock()
	out := make([]*pb.AlarmMember, 0, len(s.mu.active))
	for k := range s.mu.active {
		if t == pb.AlarmType_NONE || k.alarm == t {
			out = append(out, &pb.AlarmMember{MemberID: k.member, Alarm: k.alarm})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].MemberID != out[j].MemberID {
			return out[i].MemberID < out[j].MemberID
		}
		return out[i].Alarm < out[j].Alarm
	})
	return out
}

func (s *alarmSet) has(t pb.AlarmType) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.mu.active {
		if k.alarm == t {
			return true
		}
	}
	return false
}

// set activates (on) or deactivates the alarm and reports whether that changed anything.
func (s *alarmSet) set(k alarmKey, on bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, was := s.mu.active[k]
	if was == on {
		return false
	}
	if on {
		if s.mu.active == nil {
			s.mu.active = make(map[alarmKey]struct{})
		}
		s.mu.active[k] = struct{}{}
	} else {
		delete(s.mu.active, k)
	}
	return true
}

// Alarms returns the active alarms as of the last applied entry, ordered by member id.
func (a *Applier) Alarms() []*pb.AlarmMember { return a.alarms.list(pb.AlarmType_NONE) }

// NoSpace reports whether a NOSPACE alarm is active.
func (a *Applier) NoSpace() bool { return a.alarms.has(pb.AlarmType_NOSPACE) }

// applyAlarm applies an AlarmRequest as etcd does: ACTIVATE and DEACTIVATE answer with the
// alarm if they changed the set (nothing otherwise), GET answers with the active alarms of the
// requested type (all of them for NONE).
func (a *Applier) applyAlarm(b *pebble.Batch, r *pb.AlarmRequest, rev int64) (*pb.AlarmResponse, error) {
	resp := &pb.AlarmResponse{Header: &pb.ResponseHeader{Revision: rev}}
	k := alarmKey{r.MemberID, r.Alarm}
	m := &pb.AlarmMember{MemberID: r.MemberID, Alarm: r.Alarm}
	switch r.Action {
	case pb.AlarmRequest_GET:
		resp.Alarms = a.alarms.list(r.Alarm)
	case pb.AlarmRequest_ACTIVATE:
		if r.Alarm == pb.AlarmType_NONE || !a.alarms.set(k, true) {
			break
		}
		if err := storage.SetAlarm(b, m); err != nil {
			return nil, err
		}
		resp.Alarms = []*pb.AlarmMember{m}
		a.lg.Warn("alarm raised", zapAlarm(m)...)
	case pb.AlarmRequest_DEACTIVATE:
		if !a.alarms.set(k, false) {
			break
		}
		if err := storage.DeleteAlarm(b, m); err != nil {
			return nil, err
		}
		resp.Alarms = []*pb.AlarmMember{m}
		a.lg.Warn("alarm cleared", zapAlarm(m)...)
	}
	return resp, nil
}

// refuseCapped returns etcd's "database space exceeded" for the requests etcd refuses while a
// NOSPACE alarm is active: Put, a Txn that contains a put in either branch (at any depth), and
// LeaseGrant. Everything that frees space or only reads still works: Range, DeleteRange, a Txn
// without puts, Compaction, LeaseRevoke, lease keep-alives and the alarm requests themselves.
// The check runs in the apply loop on every member, so all of them refuse the same entries.
func (a *Applier) refuseCapped(r *pb.InternalRaftRequest) error {
	if !a.alarms.has(pb.AlarmType_NOSPACE) {
		return nil
	}
	if r.Put != nil || r.LeaseGrant != nil || (r.Txn != nil && TxnHasPut(r.Txn)) {
		return rpctypes.ErrGRPCNoSpace
	}
	return nil
}

// TxnHasPut reports whether a put appears anywhere in t: in either branch, or in a nested
// transaction.
func TxnHasPut(t *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, op := range ops {
			switch {
			case op.GetRequestPut() != nil:
				return true
			case op.GetRequestTxn() != nil && TxnHasPut(op.GetRequestTxn()):
				return true
			}
		}
	}
	return false
}

func zapAlarm(m *pb.AlarmMember) []zap.Field {
	return []zap.Field{zap.String("member-id", fmt.Sprintf("%x", m.MemberID)), zap.Stringer("alarm", m.Alarm)}
}
