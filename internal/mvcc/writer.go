package mvcc

import (
	"context"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

type writerState uint8

const (
	writerOpen writerState = iota
	writerPublished
	writerAbandoned
)

// Writer writes MVCC changes into a caller-owned indexed Pebble batch. Its writes are
// grouped into transactions, each closed by EndTxn; a transaction that changed something
// consumes one main revision, and its changes get increasing sub-revisions. A batch may hold
// any number of transactions. Reads through the Writer see the batch's earlier writes.
//
// A Writer is used by one goroutine (the apply loop). After an error the batch may hold part
// of an operation and must be abandoned (Close, not Publish).
type Writer struct {
	s     *Store
	b     *pebble.Batch
	state writerState

	rev        int64 // revision after the last ended transaction
	sub        int64 // changes made by the open transaction
	compactRev int64

	events []Event
	alloc  kvAlloc // KVs of events

	// it is a reusable iterator over b (and the DB below it); each operation refreshes its
	// view of b through SetOptions. bounds is double-buffered because Pebble compares the
	// previous bounds with the new ones during SetOptions.
	it     *pebble.Iterator
	opts   pebble.IterOptions
	bounds [2][2][]byte
	flip   int
	sc     scanner

	key  []byte // encode buffers
	val  []byte
	seek []byte
}

func (w *Writer) check() error {
	if w.state != writerOpen {
		return ErrWriterClosed
	}
	return nil
}

// iter positions nothing but returns the writer's iterator bounded to the etcd range
// [key, end), with a fresh view of the batch, and its lower bound. ok is false for an
// empty range.
func (w *Writer) iter(key, end []byte) (it *pebble.Iterator, lower []byte, ok bool, err error) {
	// Build the bounds in the buffer the iterator does not use; it only becomes the used one
	// once SetOptions has been given it.
	next := w.flip ^ 1
	bb := &w.bounds[next]
	bb[0], bb[1], ok = rangeBounds(bb[0][:0], bb[1][:0], key, end)
	if !ok {
		return nil, nil, false, nil
	}
	w.flip = next
	w.opts.LowerBound, w.opts.UpperBound = bb[0], bb[1]
	if w.it == nil {
		if w.it, err = w.b.NewIter(&w.opts); err != nil {
			w.it = nil
			return nil, nil, false, fmt.Errorf("mvcc: new batch iterator: %w", err)
		}
	} else {
		w.it.SetOptions(&w.opts)
	}
	return w.it, bb[0], true, nil
}

// Rev returns the revision after the last ended transaction.
func (w *Writer) Rev() int64 { return w.rev }

// TxnRev returns the revision of the open transaction as etcd reports it: Rev()+1 once the
// transaction changed something (the revision its changes get), Rev() before. Reads through
// the writer are served at it, and it is the header revision of a Put, DeleteRange or Txn
// response.
func (w *Writer) TxnRev() int64 {
	if w.sub > 0 {
		return w.rev + 1
	}
	return w.rev
}

// Range is ReadView.Range over the store as modified by this writer so far, at the
// in-progress revision if the open transaction already changed something.
func (w *Writer) Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	cur := w.TxnRev()
	rev, err := checkRev(ro.Rev, cur, w.compactRev)
	if err != nil {
		return nil, err
	}
	it, lower, ok, err := w.iter(key, end)
	if err != nil || !ok {
		return &RangeResult{Rev: cur}, err
	}
	kvs, count, err := w.sc.rangeAt(ctx, it, lower, end == nil, rev, ro)
	if err != nil {
		return nil, err
	}
	return &RangeResult{KVs: kvs, Rev: cur, Count: count}, nil
}

// Put writes key = value with the given lease in the open transaction and returns the
// key's previous value (nil if it did not exist). The new version continues the key's life
// (create revision kept, version + 1) or starts a new one (create revision = this
// revision, version 1).
func (w *Writer) Put(key, value []byte, lease int64) (prev *mvccpb.KeyValue, err error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	rev, sub := w.rev+1, w.sub
	create, ver := rev, int64(1)
	it, lower, _, err := w.iter(key, nil)
	if err != nil {
		return nil, err
	}
	if it.SeekGE(lower) {
		// The first version within the key's bounds is its newest.
		vk, err := parseVersionKey(it.Key())
		if err != nil {
			return nil, err
		}
		if vk.kind == kindPut {
			if prev, err = w.alloc.decode(it, vk, false); err != nil {
				return nil, err
			}
			create, ver = prev.CreateRevision, prev.Version+1
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("mvcc: put %q: read previous version: %w", key, err)
	}
	// The event's previous value is the key before the transaction, as etcd reads it at
	// mod_revision-1; a put that starts the key's life has none, even when the transaction
	// deleted an older life of the key first. Only a key this transaction already changed
	// needs a second look.
	var evPrev *mvccpb.KeyValue
	if create != rev {
		evPrev = prev
		if prev.ModRevision == rev {
			if evPrev, err = w.beforeTxn(key); err != nil {
				return nil, fmt.Errorf("mvcc: put %q: %w", key, err)
			}
		}
	}

	w.key = appendVersionKey(w.key[:0], key, rev, sub, kindPut)
	w.val = appendPutValue(w.val[:0], create, ver, lease, value)
	if err := w.b.Set(w.key, w.val, nil); err != nil {
		return nil, fmt.Errorf("mvcc: put %q: write version: %w", key, err)
	}
	if err := w.setHistory(rev, sub, kindPut, key); err != nil {
		return nil, fmt.Errorf("mvcc: put %q: %w", key, err)
	}

	kv := w.alloc.newKV()
	kv.Key = append(w.alloc.bytes(len(key)), key...)
	if len(value) > 0 {
		kv.Value = append(w.alloc.bytes(len(value)), value...)
	}
	kv.CreateRevision = create
	kv.ModRevision = rev
	kv.Version = ver
	kv.Lease = lease
	w.events = append(w.events, Event{Type: mvccpb.Event_PUT, KV: kv, PrevKV: evPrev})
	w.sub++
	return prev, nil
}

// beforeTxn returns key as it was before the open transaction: its newest version below the
// transaction's revision if that is a put, nil if it is a tombstone or there is none.
func (w *Writer) beforeTxn(key []byte) (*mvccpb.KeyValue, error) {
	it, lower, _, err := w.iter(key, nil)
	if err != nil {
		return nil, err
	}
	w.seek = appendInvMain(append(w.seek[:0], lower...), w.rev)
	var kv *mvccpb.KeyValue
	if it.SeekGE(w.seek) {
		vk, err := parseVersionKey(it.Key())
		if err != nil {
			return nil, err
		}
		if vk.kind == kindPut {
			if kv, err = w.alloc.decode(it, vk, false); err != nil {
				return nil, err
			}
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("read version before revision %d: %w", w.rev+1, err)
	}
	return kv, nil
}

func (w *Writer) setHistory(rev, sub int64, kind byte, key []byte) error {
	w.key = appendHistoryKey(w.key[:0], rev, sub)
	w.val = append(append(w.val[:0], kind), key...)
	if err := w.b.Set(w.key, w.val, nil); err != nil {
		return fmt.Errorf("write history %d/%d: %w", rev, sub, err)
	}
	return nil
}

// DeleteRange deletes the live keys in the etcd range [key, end) (see ReadView.Range) in
// the open transaction and returns their values before deletion, in key order.
func (w *Writer) DeleteRange(key, end []byte) (deleted []*mvccpb.KeyValue, err error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	it, lower, ok, err := w.iter(key, end)
	if err != nil || !ok {
		return nil, err
	}
	// Every version in the batch or the DB is at most the in-progress revision, so reading
	// at "infinity" sees the newest state.
	deleted, _, err = w.sc.rangeAt(context.Background(), it, lower, end == nil, math.MaxInt64,
		RangeOptions{SkipTotalCount: true})
	if err != nil {
		return nil, fmt.Errorf("mvcc: delete range %q-%q: %w", key, end, err)
	}
	rev := w.rev + 1
	for _, prev := range deleted {
		// As for a put, the event's previous value is the key before the transaction.
		evPrev := prev
		if prev.ModRevision == rev {
			if evPrev, err = w.beforeTxn(prev.Key); err != nil {
				return nil, fmt.Errorf("mvcc: delete %q: %w", prev.Key, err)
			}
		}
		sub := w.sub
		w.key = appendVersionKey(w.key[:0], prev.Key, rev, sub, kindTombstone)
		if err := w.b.Set(w.key, nil, nil); err != nil {
			return nil, fmt.Errorf("mvcc: delete %q: write tombstone: %w", prev.Key, err)
		}
		if err := w.setHistory(rev, sub, kindTombstone, prev.Key); err != nil {
			return nil, fmt.Errorf("mvcc: delete %q: %w", prev.Key, err)
		}
		kv := w.alloc.newKV()
		kv.Key = prev.Key
		kv.ModRevision = rev
		w.events = append(w.events, Event{Type: mvccpb.Event_DELETE, KV: kv, PrevKV: evPrev})
		w.sub++
	}
	return deleted, nil
}

// EndTxn closes the open transaction and returns the revision after it (the revision to
// report in its response header): if the transaction changed anything it consumed the
// next main revision.
func (w *Writer) EndTxn() int64 {
	if w.sub > 0 {
		w.rev++
		w.sub = 0
	}
	return w.rev
}

// Compact schedules a compaction at rev: reads below rev fail with ErrCompacted from now on
// (for this writer, and for readers once published). It fails with ErrCompacted if rev is
// not above the compact revision (-1 before the first compaction, so a first compaction at
// revision 0 is accepted, as etcd does) and with ErrFutureRev if it is above the current
// revision.
// The compaction does not consume a revision. Physical removal happens later, in
// Store.Compact, after the batch was committed and the writer published.
func (w *Writer) Compact(rev int64) error {
	if err := w.check(); err != nil {
		return err
	}
	if rev <= w.compactRev {
		return fmt.Errorf("mvcc: compact at revision %d, already compacted at %d: %w", rev, w.compactRev, ErrCompacted)
	}
	if rev > w.rev {
		return fmt.Errorf("mvcc: compact at revision %d, current revision is %d: %w", rev, w.rev, ErrFutureRev)
	}
	w.val = appendMetaRev(w.val[:0], rev)
	if err := w.b.Set(metaCompactKey, w.val, nil); err != nil {
		return fmt.Errorf("mvcc: compact at revision %d: write meta: %w", rev, err)
	}
	w.compactRev = rev
	return nil
}

// CompactRev returns the compact revision including compactions scheduled by this writer.
func (w *Writer) CompactRev() int64 { return w.compactRev }

// Events returns the changes made through this writer, in revision order. Put events carry
// the previous value as PrevKV, delete events the deleted value.
func (w *Writer) Events() []Event { return w.events }

// Close abandons the writer without publishing it (the batch was not, or will not be,
// committed) and releases its resources. It is a no-op after Publish.
func (w *Writer) Close() error {
	if w.state != writerOpen {
		return nil
	}
	err := w.release()
	w.state = writerAbandoned
	w.s.writerActive.Store(false)
	return err
}

// release closes the writer's iterator.
func (w *Writer) release() error {
	if w.it == nil {
		return nil
	}
	err := w.it.Close()
	w.it = nil
	if err != nil {
		return fmt.Errorf("mvcc: writer: close iterator: %w", err)
	}
	return nil
}
