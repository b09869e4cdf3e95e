package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

func memberKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), keyMemberPfx...), id)
}

// Members returns the stored cluster members in id order.
func Members(r pebble.Reader) ([]*pb.Member, error) {
	upper := append(append([]byte(nil), keyMemberPfx...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: keyMemberPfx, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("iterate members: %w", err)
	}
	defer it.Close()
	var out []*pb.Member
	for it.First(); it.Valid(); it.Next() {
		m := &pb.Member{}
		if err := proto.Unmarshal(it.Value(), m); err != nil {
			return nil, fmt.Errorf("%w: member %x: %v", ErrCorrupt, it.Key(), err)
		}
		out = append(out, m)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("iterate members: %w", err)
	}
	return out, nil
}

// SetMember records m in b.
func SetMember(b *pebble.Batch, m *pb.Member) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal member: %w", err)
	}
	return b.Set(memberKey(m.ID), v, nil)
}

// DeleteMember removes member id in b.
func DeleteMember(b *pebble.Batch, id uint64) error {
	return b.Delete(memberKey(id), nil)
}
