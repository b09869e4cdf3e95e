package mvcc

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

func TestWriterLifecycle(t *testing.T) {
	s, db, _ := newStore(t)
	b := db.NewIndexedBatch()
	w := s.NewWriter(b)
	if _, err := w.Put([]byte("a"), []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	w.EndTxn()
	// Abandon: nothing published, the next writer starts from the published revision.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put([]byte("a"), []byte("1"), 0); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("put on closed writer: %v", err)
	}
	if rev := mustPut(t, s, "b", "1", 0); rev != 2 {
		t.Fatalf("rev after abandoned writer = %d", rev)
	}
	// Publish ends an open txn.
	b = db.NewIndexedBatch()
	defer b.Close()
	w = s.NewWriter(b)
	if _, err := w.Put([]byte("c"), []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	s.Publish(w)
	if s.CurrentRev() != 3 {
		t.Fatalf("CurrentRev = %d", s.CurrentRev())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("second active writer accepted")
			}
		}()
		b2 := db.NewIndexedBatch()
		defer b2.Close()
		w2 := s.NewWriter(b2)
		defer w2.Close()
		s.NewWriter(b2)
	}()
}

func TestRangeCanceledAndLargeValues(t *testing.T) {
	s, _, _ := newStore(t)
	big := make([]byte, 40<<10)
	for i := range big {
		big[i] = byte(i)
	}
	write(t, s, func(w *Writer) {
		for i := range 1000 {
			v := []byte(itoa(int64(i)))
			if i%100 == 0 {
				v = big
			}
			if _, err := w.Put([]byte("key/"+itoa(int64(i))), v, 0); err != nil {
				t.Fatal(err)
			}
		}
		w.EndTxn()
	})
	r := mustRead(t, s, []byte("key/"), []byte("key0"), RangeOptions{})
	if len(r.KVs) != 1000 || r.Count != 1000 {
		t.Fatalf("%d kvs, count %d", len(r.KVs), r.Count)
	}
	for _, kv := range r.KVs {
		if string(kv.Key) == "key/500" && !bytes.Equal(kv.Value, big) {
			t.Fatal("large value corrupted")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Range(ctx, []byte("key/"), []byte("key0"), RangeOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled range: %v", err)
	}
}

func TestReload(t *testing.T) {
	s, db, _ := newStore(t)
	mustPut(t, s, "a", "1", 0)
	// Another store over the same DB stands in for a replaced state.
	other, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, other, "b", "2", 0)
	mustPut(t, other, "c", "3", 0)
	compact(t, other, 3)
	if s.CurrentRev() != 2 {
		t.Fatalf("CurrentRev before reload = %d", s.CurrentRev())
	}
	b := db.NewIndexedBatch()
	w := s.NewWriter(b)
	if err := s.Reload(); !errors.Is(err, ErrWriterActive) {
		t.Fatalf("reload with an active writer: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.CurrentRev() != 4 || s.CompactRev() != 3 {
		t.Fatalf("after reload: current %d compact %d", s.CurrentRev(), s.CompactRev())
	}
	if _, ok := s.PendingCompaction(); ok {
		t.Fatal("finished compaction pending after reload")
	}
	if rev := mustPut(t, s, "d", "4", 0); rev != 5 {
		t.Fatalf("put after reload at %d", rev)
	}
}

func TestReadViewSharedAndClosed(t *testing.T) {
	s := basicStore(t)
	v, err := s.NewReadView()
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "a", "later", 0) // not visible to v
	ctx := context.Background()
	errc := make(chan error, 8)
	for range 8 {
		go func() {
			for range 50 {
				r, err := v.Range(ctx, nil, []byte{0}, RangeOptions{})
				if err == nil && (len(r.KVs) != 5 || string(r.KVs[0].Value) != "5") {
					err = errors.New("view changed: " + fmtKVs(r.KVs))
				}
				if err == nil {
					_, _, err = v.Events(2, 3)
				}
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := v.Range(ctx, []byte("a"), nil, RangeOptions{}); !errors.Is(err, ErrViewClosed) {
		t.Fatalf("range on closed view: %v", err)
	}
}
