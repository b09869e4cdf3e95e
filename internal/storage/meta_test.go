package storage

import (
	"errors"
	"math"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestMembersRoundTrip(t *testing.T) {
	te := newTestEngine(t)
	if ms, err := Members(te.DB); err != nil || len(ms) != 0 {
		t.Fatalf("Members on a new engine = %v, %v; want none", ms, err)
	}
	members := []*pb.Member{
		{ID: math.MaxUint64, Name: "max", PeerURLs: []string{"http://m:2380"}},
		{ID: 0x10, Name: "b", PeerURLs: []string{"http://b:2380", "http://b2:2380"}, ClientURLs: []string{"http://b:2379"}},
		{ID: 0x2, Name: "a", IsLearner: true},
		{ID: 0x100, PeerURLs: []string{"http://c:2380"}},
	}
	// Other meta keys next to the members must not show up as members.
	commit(t, te.Engine, func(b *pebble.Batch) error {
		for _, m := range members {
			if err := SetMember(b, m); err != nil {
				return err
			}
		}
		if err := SetClusterID(b, 7); err != nil {
			return err
		}
		if err := SetApplied(b, 9, 2); err != nil {
			return err
		}
		return SetConfState(b, &raftpb.ConfState{Voters: []uint64{2}})
	})
	check := func(want ...*pb.Member) {
		t.Helper()
		got, err := Members(te.DB)
		if err != nil {
			t.Fatalf("Members: %v", err)
		}
		if len(got) != len(want) {
			t.Fatalf("Members = %v, want %v", got, want)
		}
		for i := range got {
			if !proto.Equal(got[i], want[i]) {
				t.Errorf("Members[%d] = %v, want %v", i, got[i], want[i])
			}
		}
	}
	check(members[2], members[1], members[3], members[0]) // id order
	// Update one, delete one, delete one that is not there.
	updated := &pb.Member{ID: 0x10, Name: "b", PeerURLs: []string{"http://b3:2380"}}
	commit(t, te.Engine, func(b *pebble.Batch) error {
		if err := SetMember(b, updated); err != nil {
			return err
		}
		if err := DeleteMember(b, 0x2); err != nil {
			return err
		}
		return DeleteMember(b, 0x999)
	})
	check(updated, members[3], members[0])
	te.reopen()
	check(updated, members[3], members[0])

	commit(t, te.Engine, func(b *pebble.Batch) error { return b.Set(memberKey(5), []byte{0xff}, nil) })
	if _, err := Members(te.DB); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Members with a corrupt record = %v, want ErrCorrupt", err)
	}
}

func TestMetaRoundTrips(t *testing.T) {
	te := newTestEngine(t)
	db := te.DB
	if id, err := ClusterID(db); err != nil || id != 0 {
		t.Errorf("ClusterID on a new engine = %d, %v; want 0", id, err)
	}
	if id, err := LocalID(db); err != nil || id != 0 {
		t.Errorf("LocalID on a new engine = %d, %v; want 0", id, err)
	}
	if i, term, err := Applied(db); err != nil || i != 0 || term != 0 {
		t.Errorf("Applied on a new engine = %d, %d, %v; want 0, 0", i, term, err)
	}
	if cs, err := ConfState(db); err != nil || cs == nil || len(cs.GetVoters()) != 0 {
		t.Errorf("ConfState on a new engine = %v, %v; want empty", cs, err)
	}

	cs := &raftpb.ConfState{
		Voters: []uint64{1, 2, 3}, Learners: []uint64{4},
		VotersOutgoing: []uint64{1, 2, 5}, LearnersNext: []uint64{5}, AutoLeave: proto.Bool(true),
	}
	commit(t, te.Engine, func(b *pebble.Batch) error {
		if err := SetClusterID(b, 0xdeadbeefcafe); err != nil {
			return err
		}
		if err := SetLocalID(b, math.MaxUint64); err != nil {
			return err
		}
		if err := SetApplied(b, math.MaxUint64-1, 1<<40); err != nil {
			return err
		}
		return SetConfState(b, cs)
	})
	check := func() {
		t.Helper()
		db := te.DB
		if id, err := ClusterID(db); err != nil || id != 0xdeadbeefcafe {
			t.Errorf("ClusterID = %x, %v", id, err)
		}
		if id, err := LocalID(db); err != nil || id != math.MaxUint64 {
			t.Errorf("LocalID = %x, %v", id, err)
		}
		if i, term, err := Applied(db); err != nil || i != math.MaxUint64-1 || term != 1<<40 {
			t.Errorf("Applied = %d, %d, %v", i, term, err)
		}
		if got, err := ConfState(db); err != nil || !proto.Equal(got, cs) {
			t.Errorf("ConfState = %v, %v; want %v", got, err, cs)
		}
	}
	check()
	te.reopen()
	check()

	// A batch that is not committed changes nothing; an indexed batch reads its own writes.
	b := te.DB.NewIndexedBatch()
	if err := SetApplied(b, 5, 5); err != nil {
		t.Fatal(err)
	}
	if i, _, err := Applied(b); err != nil || i != 5 {
		t.Errorf("Applied through the indexed batch = %d, %v; want 5", i, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	check()

	// Records of the wrong size are corrupt.
	for name, tc := range map[string]struct {
		key  []byte
		read func() error
	}{
		"cluster id": {keyCluster, func() error { _, err := ClusterID(te.DB); return err }},
		"local id":   {keyLocalID, func() error { _, err := LocalID(te.DB); return err }},
		"applied":    {keyApplied, func() error { _, _, err := Applied(te.DB); return err }},
	} {
		commit(t, te.Engine, func(b *pebble.Batch) error { return b.Set(tc.key, []byte{1, 2, 3}, nil) })
		if err := tc.read(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s with 3 bytes: %v, want ErrCorrupt", name, err)
		}
	}
}

// TestKeyspace pins where the records live: the member id is not state (a snapshot from another
// member must not carry it), everything else in the meta prefix is.
func TestKeyspace(t *testing.T) {
	inState := func(k []byte) bool { return string(k) >= string(StateStart) && string(k) < string(StateEnd) }
	for name, k := range map[string][]byte{
		"applied": keyApplied, "conf state": keyConfState, "cluster id": keyCluster, "member": memberKey(1),
	} {
		if !inState(k) {
			t.Errorf("%s key %x is outside the state range", name, k)
		}
	}
	for name, k := range map[string][]byte{
		"local id": keyLocalID, "hard state": keyHardState, "snapshot metadata": keySnapMeta,
		"truncated state": keyTruncated, "entry 0": entryKey(0), "last entry": entryKey(math.MaxUint64),
	} {
		if inState(k) {
			t.Errorf("%s key %x is inside the state range", name, k)
		}
	}
	for _, p := range []byte{PrefixMeta, PrefixMVCC, PrefixLease} {
		if !inState([]byte{p}) {
			t.Errorf("prefix %#x is outside the state range", p)
		}
	}
}
