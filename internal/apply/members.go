package apply

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/ordo-db/ordo/internal/storage"
)

// applyConfChange hands a configuration entry to raft and records the new configuration and
// membership. When skip is set the state already contains the entry's effects (it came with a
// snapshot), so only raft learns about it.
func (a *Applier) applyConfChange(b *pebble.Batch, ent *raftpb.Entry, confChange func(raftpb.ConfChangeI) *raftpb.ConfState, skip bool) (bool, error) {
	var cc raftpb.ConfChangeI
	var changes []*raftpb.ConfChangeSingle
	var ctx []byte
	if ent.GetType() == raftpb.EntryConfChange {
		c := &raftpb.ConfChange{}
		if err := proto.Unmarshal(ent.GetData(), c); err != nil {
			return false, fmt.Errorf("%w: conf change at %d: %v", storage.ErrCorrupt, ent.GetIndex(), err)
		}
		cc, ctx = c, c.GetContext()
		changes = c.AsV2().GetChanges()
	} else {
		c := &raftpb.ConfChangeV2{}
		if err := proto.Unmarshal(ent.GetData(), c); err != nil {
			return false, fmt.Errorf("%w: conf change at %d: %v", storage.ErrCorrupt, ent.GetIndex(), err)
		}
		cc, ctx = c, c.GetContext()
		changes = c.GetChanges()
	}
	cs := confChange(cc)
	if skip {
		return false, nil
	}
	if err := storage.SetConfState(b, cs); err != nil {
		return false, err
	}
	for _, ch := range changes {
		switch ch.GetType() {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			m := &pb.Member{}
			if len(ctx) > 0 {
				if err := proto.Unmarshal(ctx, m); err != nil {
					return false, fmt.Errorf("%w: member in conf change at %d: %v", storage.ErrCorrupt, ent.GetIndex(), err)
				}
			}
			m.ID = ch.GetNodeId()
			m.IsLearner = ch.GetType() == raftpb.ConfChangeAddLearnerNode
			if err := storage.SetMember(b, m); err != nil {
				return false, err
			}
		case raftpb.ConfChangeRemoveNode:
			if err := storage.DeleteMember(b, ch.GetNodeId()); err != nil {
				return false, err
			}
		}
	}
	return true, nil
}

// setMemberAttrs records the name and client URLs a member published.
func (a *Applier) setMemberAttrs(b *pebble.Batch, id uint64, name string, clientURLs []string) error {
	members, err := storage.Members(b)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.ID == id {
			m.Name = name
			m.ClientURLs = clientURLs
			return storage.SetMember(b, m)
		}
	}
	return nil
}
