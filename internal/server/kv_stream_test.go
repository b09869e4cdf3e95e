package server_test

import (
	"fmt"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ordo-db/ordo/internal/testcluster"
)

const streamKeys = 5000

// collectStream drains a GetStream channel and returns its chunks, or the stream's error.
func collectStream(t testing.TB, ch clientv3.GetStreamChan) ([]*pb.RangeResponse, error) {
	t.Helper()
	var chunks []*pb.RangeResponse
	for r := range ch {
		if err := r.Err(); err != nil {
			return chunks, err
		}
		if r.RangeResponse == nil {
			t.Fatalf("stream chunk without a range response")
		}
		chunks = append(chunks, r.RangeResponse)
	}
	return chunks, nil
}

func mustStream(t testing.TB, cli *clientv3.Client, key string, opts ...clientv3.OpOption) []*pb.RangeResponse {
	t.Helper()
	ch, err := cli.GetStream(ctx(t), key, opts...)
	if err != nil {
		t.Fatalf("get stream %q: %v", key, err)
	}
	chunks, err := collectStream(t, ch)
	if err != nil {
		t.Fatalf("get stream %q: %v", key, err)
	}
	if len(chunks) == 0 {
		t.Fatalf("get stream %q: no chunks", key)
	}
	return chunks
}

// streamErr returns the error a stream ends with.
func streamErr(t testing.TB, cli *clientv3.Client, key string, opts ...clientv3.OpOption) error {
	t.Helper()
	ch, err := cli.GetStream(ctx(t), key, opts...)
	if err != nil {
		return err
	}
	_, err = collectStream(t, ch)
	return err
}

// checkChunks checks the framing clientv3 documents for RangeStream (as etcd v3.7 serves it):
// key-values are disjoint per chunk, and header, more and count are set on the final chunk
// only. It returns all key-values.
func checkChunks(t testing.TB, what string, chunks []*pb.RangeResponse, rev, count int64, more bool) []*mvccpb.KeyValue {
	t.Helper()
	var kvs []*mvccpb.KeyValue
	for i, ch := range chunks {
		kvs = append(kvs, ch.Kvs...)
		if i == len(chunks)-1 {
			continue
		}
		if ch.Header != nil || ch.More || ch.Count != 0 {
			t.Errorf("%s: chunk %d of %d carries header %v more %v count %d; etcd sets them on the final chunk only",
				what, i, len(chunks), ch.Header, ch.More, ch.Count)
		}
	}
	last := chunks[len(chunks)-1]
	switch {
	case last.Header == nil:
		t.Errorf("%s: the final chunk (%d of %d) has no header", what, len(chunks)-1, len(chunks))
	case last.Header.ClusterId == 0 || last.Header.MemberId == 0 || last.Header.RaftTerm == 0:
		t.Errorf("%s: final chunk header %v lacks cluster/member id or raft term", what, last.Header)
	case last.Header.Revision != rev:
		t.Errorf("%s: final chunk header revision %d, want %d", what, last.Header.Revision, rev)
	}
	if last.Count != count || last.More != more {
		t.Errorf("%s: final chunk: count %d more %v, want %d %v", what, last.Count, last.More, count, more)
	}
	keys := keysOf(kvs)
	if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
		t.Fatalf("%s: keys are not strictly ascending across chunks", what)
	}
	return kvs
}

func testRangeStream(t *testing.T, c *testcluster.Cluster) {
	cli := c.Client()
	pfx := prefix(t)
	key := func(i int) string { return fmt.Sprintf("%sk%05d", pfx, i) }
	// 5,000 keys, 125 per txn.
	for i := 0; i < streamKeys; i += 125 {
		var ops []clientv3.Op
		for j := i; j < i+125; j++ {
			ops = append(ops, clientv3.OpPut(key(j), fmt.Sprintf("v%05d", j)))
		}
		mustTxn(t, cli, nil, ops, nil)
	}
	rev := currentRev(t, cli)
	wantAll := func(t testing.TB, what string, kvs []*mvccpb.KeyValue, n int, valuePrefix string) {
		t.Helper()
		if len(kvs) != n {
			t.Fatalf("%s: %d keys, want %d", what, len(kvs), n)
		}
		for i, kv := range kvs {
			if string(kv.Key) != key(i) || string(kv.Value) != fmt.Sprintf("%s%05d", valuePrefix, i) || kv.ModRevision > rev || kv.Version != 1 {
				t.Fatalf("%s: kv %d is %q=%q mod %d version %d", what, i, kv.Key, kv.Value, kv.ModRevision, kv.Version)
			}
		}
	}

	t.Run("All", func(t *testing.T) {
		chunks := mustStream(t, cli, pfx, clientv3.WithPrefix())
		if len(chunks) < 2 {
			t.Fatalf("%d keys came in %d chunk(s), want several", streamKeys, len(chunks))
		}
		t.Logf("%d keys in %d chunks", streamKeys, len(chunks))
		kvs := checkChunks(t, "all", chunks, rev, streamKeys, false)
		wantAll(t, "all", kvs, streamKeys, "v")
	})

	t.Run("MergedResponse", func(t *testing.T) {
		ch, err := cli.GetStream(ctx(t), pfx, clientv3.WithPrefix())
		if err != nil {
			t.Fatalf("get stream: %v", err)
		}
		resp, err := clientv3.GetStreamToGetResponse(ch)
		if err != nil {
			t.Fatalf("merge stream: %v", err)
		}
		wantAll(t, "merged", resp.Kvs, streamKeys, "v")
		if resp.Count != streamKeys || resp.More || resp.Header.GetRevision() != rev {
			t.Fatalf("merged: count %d more %v revision %d, want %d false %d", resp.Count, resp.More, resp.Header.GetRevision(), streamKeys, rev)
		}
		// It equals a plain Get of the same range.
		g := mustGet(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithRev(rev))
		if g.Count != resp.Count || g.More != resp.More || len(g.Kvs) != len(resp.Kvs) {
			t.Fatalf("merged stream: count %d more %v kvs %d; get: count %d more %v kvs %d", resp.Count, resp.More, len(resp.Kvs), g.Count, g.More, len(g.Kvs))
		}
	})

	t.Run("OneRevision", func(t *testing.T) {
		ch, err := cli.GetStream(ctx(t), pfx, clientv3.WithPrefix())
		if err != nil {
			t.Fatalf("get stream: %v", err)
		}
		first, ok := <-ch
		if !ok || first.Err() != nil {
			t.Fatalf("first chunk: %v", first.Err())
		}
		// Change the range while the stream is open: the stream must not see it.
		mustPut(t, cli, key(streamKeys-1), "changed")
		mustDelete(t, cli, key(streamKeys-2))
		mustPut(t, cli, key(streamKeys), "new")
		rest, err := collectStream(t, ch)
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		kvs := checkChunks(t, "stream during writes", append([]*pb.RangeResponse{first.RangeResponse}, rest...), rev, streamKeys, false)
		wantAll(t, "stream during writes", kvs, streamKeys, "v")
		// A stream pinned at the old revision still returns it; a new one sees the writes.
		kvs = checkChunks(t, "stream at old revision", mustStream(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithRev(rev)), currentRev(t, cli), streamKeys, false)
		wantAll(t, "stream at old revision", kvs, streamKeys, "v")
		now := currentRev(t, cli)
		kvs = checkChunks(t, "stream after writes", mustStream(t, cli, pfx, clientv3.WithPrefix()), now, streamKeys, false)
		if string(kvs[streamKeys-2].Value) != "changed" || string(kvs[streamKeys-1].Key) != key(streamKeys) {
			t.Fatalf("stream after writes: last keys %q=%q, %q", kvs[streamKeys-2].Key, kvs[streamKeys-2].Value, kvs[streamKeys-1].Key)
		}
		// Restore the range for the next cases.
		mustTxn(t, cli, nil, []clientv3.Op{clientv3.OpPut(key(streamKeys-1), fmt.Sprintf("v%05d", streamKeys-1)), clientv3.OpPut(key(streamKeys-2), fmt.Sprintf("v%05d", streamKeys-2)), clientv3.OpDelete(key(streamKeys))}, nil)
	})

	t.Run("Limit", func(t *testing.T) {
		now := currentRev(t, cli)
		chunks := mustStream(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithLimit(1500))
		kvs := checkChunks(t, "limit 1500", chunks, now, streamKeys, true)
		if len(kvs) != 1500 || string(kvs[1499].Key) != key(1499) {
			t.Fatalf("limit 1500: %d keys", len(kvs))
		}
		chunks = mustStream(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithLimit(streamKeys))
		if kvs := checkChunks(t, "limit = keys", chunks, now, streamKeys, false); len(kvs) != streamKeys {
			t.Fatalf("limit = keys: %d keys", len(kvs))
		}
	})

	t.Run("KeysOnlyCountOnlySingle", func(t *testing.T) {
		now := currentRev(t, cli)
		kvs := checkChunks(t, "keys only", mustStream(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly()), now, streamKeys, false)
		if len(kvs) != streamKeys {
			t.Fatalf("keys only: %d keys", len(kvs))
		}
		for _, kv := range kvs {
			if len(kv.Value) != 0 {
				t.Fatalf("keys only: %q has a value", kv.Key)
			}
		}
		chunks := mustStream(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if len(chunks) != 1 || chunks[0].Count != streamKeys || len(chunks[0].Kvs) != 0 || chunks[0].Header.GetRevision() != now {
			t.Fatalf("count only: %d chunks, first %v", len(chunks), chunks[0])
		}
		chunks = mustStream(t, cli, key(42))
		kvs = checkChunks(t, "single key", chunks, now, 1, false)
		wantKeys(t, "single key", kvs, key(42))
		chunks = mustStream(t, cli, pfx+"nothing/", clientv3.WithPrefix())
		if kvs := checkChunks(t, "empty range", chunks, now, 0, false); len(kvs) != 0 {
			t.Fatalf("empty range: %d keys", len(kvs))
		}
		chunks = mustStream(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithSerializable())
		if kvs := checkChunks(t, "serializable", chunks, chunks[len(chunks)-1].Header.GetRevision(), streamKeys, false); len(kvs) != streamKeys {
			t.Fatalf("serializable: %d keys", len(kvs))
		}
	})

	t.Run("Errors", func(t *testing.T) {
		now := currentRev(t, cli)
		wantErr(t, "stream at a future revision", streamErr(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithRev(now+10)), rpctypes.ErrFutureRev)
		wantErr(t, "stream of an empty key", streamErr(t, cli, ""), rpctypes.ErrEmptyKey)
		err := streamErr(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend))
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("stream with a sort order: %v, want Unimplemented", err)
		}
		err = streamErr(t, cli, pfx, clientv3.WithPrefix(), clientv3.WithMinModRev(2))
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("stream with a revision filter: %v, want Unimplemented", err)
		}
	})
}
