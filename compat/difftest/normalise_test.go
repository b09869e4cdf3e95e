package difftest

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-cmp/cmp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
)

// leaseIDs maps the lease ids the servers chose themselves (LeaseGrant with ID 0) onto each
// other. Ids a client chose are the same on both sides and are not in the maps.
type leaseIDs struct {
	etcdToOrdo map[int64]int64
	ordoToEtcd map[int64]int64
	compactRev int64 // the last compaction of the run, for the known-difference matchers
}

func newLeaseIDs() *leaseIDs {
	return &leaseIDs{etcdToOrdo: make(map[int64]int64), ordoToEtcd: make(map[int64]int64)}
}

func (l *leaseIDs) add(etcdID, ordoID int64) {
	l.etcdToOrdo[etcdID] = ordoID
	l.ordoToEtcd[ordoID] = etcdID
}

func mapper(m map[int64]int64) func(int64) int64 {
	return func(id int64) int64 {
		if v, ok := m[id]; ok {
			return v
		}
		return id
	}
}

// rewriteLeaseIDs replaces every lease id in m, at any depth, by f(id): the int64 fields named
// "lease" (PutRequest, Compare, KeyValue) and "ID" (the lease requests and responses).
func rewriteLeaseIDs(m protoreflect.Message, f func(int64) int64) {
	type set struct {
		fd protoreflect.FieldDescriptor
		v  int64
	}
	var sets []set
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				l := v.List()
				for i := range l.Len() {
					rewriteLeaseIDs(l.Get(i).Message(), f)
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			rewriteLeaseIDs(v.Message(), f)
		case fd.Kind() == protoreflect.Int64Kind && (fd.Name() == "lease" || fd.Name() == "ID"):
			sets = append(sets, set{fd, f(v.Int())})
		}
		return true
	})
	for _, s := range sets {
		m.Set(s.fd, protoreflect.ValueOfInt64(s.v))
	}
}

// clearHeaders zeroes the parts of every response header that name the cluster, member and
// raft term; the revision stays.
func clearHeaders(m protoreflect.Message) {
	if h, ok := m.Interface().(*pb.ResponseHeader); ok {
		h.ClusterId, h.MemberId, h.RaftTerm = 0, 0, 0
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				l := v.List()
				for i := range l.Len() {
					clearHeaders(l.Get(i).Message())
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			clearHeaders(v.Message())
		}
		return true
	})
}

// ttlTolerance is how far apart the remaining TTLs of one lease may be: the two servers granted
// it a few milliseconds apart, and each rounds the remaining time down to seconds.
const ttlTolerance = 2

// normalise returns copies of both responses with everything that legitimately differs made
// equal: header ids and term, Ordo's automatic lease ids (replaced by etcd's), the order of lease
// keys and lease lists (etcd lists them in Go map order) and remaining TTLs within ttlTolerance.
func normalise(ids *leaseIDs, etcdResp, ordoResp proto.Message) (proto.Message, proto.Message) {
	e, o := proto.Clone(etcdResp), proto.Clone(ordoResp)
	rewriteLeaseIDs(o.ProtoReflect(), mapper(ids.ordoToEtcd))
	for _, m := range []proto.Message{e, o} {
		clearHeaders(m.ProtoReflect())
		switch r := m.(type) {
		case *pb.LeaseTimeToLiveResponse:
			slices.SortFunc(r.Keys, bytes.Compare)
		case *pb.LeaseLeasesResponse:
			slices.SortFunc(r.Leases, func(a, b *pb.LeaseStatus) int { return cmpInt64(a.ID, b.ID) })
		}
	}
	if et, ok := e.(*pb.LeaseTimeToLiveResponse); ok {
		ot := o.(*pb.LeaseTimeToLiveResponse)
		if et.TTL > 0 && ot.TTL > 0 && abs(et.TTL-ot.TTL) <= ttlTolerance {
			ot.TTL = et.TTL
		}
	}
	return e, o
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// result is one server's answer to one request.
type result struct {
	resp proto.Message
	err  error
}

func (r result) String() string {
	if r.err != nil {
		s := status.Convert(r.err)
		return fmt.Sprintf("error code=%s message=%q", s.Code(), s.Message())
	}
	return describe(r.resp)
}

func describe(m proto.Message) string {
	if m == nil {
		return "<nil>"
	}
	s := prototext.MarshalOptions{}.Format(m)
	if len(s) > 3000 {
		s = s[:3000] + " ...(truncated)"
	}
	return fmt.Sprintf("%T{%s}", m, strings.TrimSpace(s))
}

// difference compares two results: errors by gRPC code and message, responses field by field
// after normalise. It returns "" when they agree.
func difference(ids *leaseIDs, e, o result) string {
	if e.err != nil || o.err != nil {
		if e.err == nil || o.err == nil {
			return "one server failed, the other did not"
		}
		es, os := status.Convert(e.err), status.Convert(o.err)
		if es.Code() != os.Code() || es.Message() != os.Message() {
			return "different errors"
		}
		return ""
	}
	en, on := normalise(ids, e.resp, o.resp)
	if proto.Equal(en, on) {
		return ""
	}
	return "field differences (-etcd +ordo):\n" + cmp.Diff(en, on, protocmp.Transform())
}
