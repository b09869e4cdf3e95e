package mvcc

import (
	"context"
	"errors"
	"testing"
)

func hashAt(t *testing.T, s *Store, rev int64) KeyValueHash {
	t.Helper()
	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	h, err := v.HashKV(context.Background(), rev)
	if err != nil {
		t.Fatalf("HashKV(%d): %v", rev, err)
	}
	return h
}

func TestHashKV(t *testing.T) {
	build := func() *Store {
		s, _, _ := newStore(t)
		for i := range 30 {
			mustPut(t, s, "k"+itoa(int64(i%7)), itoa(int64(i)), 0)
			if i%4 == 0 {
				mustDelete(t, s, []byte("k"+itoa(int64(i%5))), nil)
			}
		}
		return s
	}
	s1, s2 := build(), build()
	cur := s1.CurrentRev()
	for rev := int64(1); rev <= cur; rev++ {
		if h1, h2 := hashAt(t, s1, rev), hashAt(t, s2, rev); h1 != h2 {
			t.Fatalf("same history, different hashes at %d: %+v %+v", rev, h1, h2)
		}
	}
	if hashAt(t, s1, cur) == hashAt(t, s1, cur-1) {
		t.Fatal("hash did not change with the revision")
	}
	// Scheduling vs. running the compaction does not change hashes at revisions >= C.
	const c = 20
	write(t, s1, func(w *Writer) {
		if err := w.Compact(c); err != nil {
			t.Fatal(err)
		}
	})
	before := map[int64]KeyValueHash{}
	for rev := int64(c); rev <= cur; rev++ {
		before[rev] = hashAt(t, s1, rev)
	}
	if err := s1.Compact(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	for rev := int64(c); rev <= cur; rev++ {
		if h := hashAt(t, s1, rev); h != before[rev] {
			t.Fatalf("hash at %d changed by physical compaction: %+v -> %+v", rev, before[rev], h)
		}
	}
	if h := hashAt(t, s1, 0); h.Revision != cur || h.CompactRevision != c {
		t.Fatalf("hash at 0: %+v", h)
	}
	v, err := s1.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.HashKV(context.Background(), c-1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("hash below compaction: %v", err)
	}
	if _, err := v.HashKV(context.Background(), cur+1); !errors.Is(err, ErrFutureRev) {
		t.Fatalf("hash of future: %v", err)
	}
}
