package check

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/ordo-db/ordo/internal/testcluster"
)

func op(client int, call, ret int64, in input, out output) porcupine.Operation {
	if out.Unknown {
		ret = math.MaxInt64
	}
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func kv(key, value string, create, mod, version int64) kvOut {
	return kvOut{Key: key, Value: value, CreateRevision: create, ModRevision: mod, Version: version}
}

// The model accepts histories a correct store produces and rejects the classic anomalies.
func TestModel(t *testing.T) {
	put := func(k, v string) input { return input{Kind: opPut, Key: k, Value: v} }
	get := func(k string) input { return input{Kind: opGet, Key: k} }
	cases := []struct {
		name  string
		ops   []porcupine.Operation
		legal bool
	}{
		{"put then get", []porcupine.Operation{
			op(0, 0, 1, put("a", "1"), output{Revision: 11}),
			op(1, 2, 3, get("a"), output{Revision: 11, KVs: []kvOut{kv("a", "1", 11, 11, 1)}}),
		}, true},
		{"stale read after an acknowledged put", []porcupine.Operation{
			op(0, 0, 1, put("a", "1"), output{Revision: 11}),
			op(1, 2, 3, get("a"), output{Revision: 10}),
		}, false},
		{"concurrent get may miss the put", []porcupine.Operation{
			op(0, 0, 5, put("a", "1"), output{Revision: 11}),
			op(1, 1, 3, get("a"), output{Revision: 10}),
		}, true},
		{"revision going back", []porcupine.Operation{
			op(0, 0, 1, put("a", "1"), output{Revision: 12}),
			op(0, 2, 3, put("b", "1"), output{Revision: 11}),
		}, false},
		{"lost update: version does not count the first put", []porcupine.Operation{
			op(0, 0, 1, put("a", "1"), output{Revision: 11}),
			op(0, 2, 3, put("a", "2"), output{Revision: 12}),
			op(1, 4, 5, get("a"), output{Revision: 12, KVs: []kvOut{kv("a", "2", 12, 12, 1)}}),
		}, false},
		{"unknown put seen later", []porcupine.Operation{
			op(0, 0, 0, put("a", "1"), output{Unknown: true}),
			op(1, 4, 5, get("a"), output{Revision: 15, KVs: []kvOut{kv("a", "1", 13, 13, 1)}}),
		}, true},
		{"unknown put never seen", []porcupine.Operation{
			op(0, 0, 0, put("a", "1"), output{Unknown: true}),
			op(1, 4, 5, get("a"), output{Revision: 15}),
		}, true},
		{"cas must see the current value", []porcupine.Operation{
			op(0, 0, 1, put("a", "1"), output{Revision: 11}),
			op(1, 2, 3, input{Kind: opCAS, Key: "a", Expect: "", Value: "2"}, output{Revision: 12, Succeeded: true}),
		}, false},
		{"put with a revoked lease fails", []porcupine.Operation{
			op(0, 0, 1, input{Kind: opGrant, Lease: 7}, output{}),
			op(0, 2, 3, input{Kind: opRevoke, Lease: 7}, output{}),
			op(0, 4, 5, input{Kind: opPut, Key: "a", Value: "1", Lease: 7}, output{Revision: 11}),
		}, false},
		{"revoke deletes attached keys", []porcupine.Operation{
			op(0, 0, 1, input{Kind: opGrant, Lease: 7}, output{}),
			op(0, 2, 3, input{Kind: opPut, Key: "a", Value: "1", Lease: 7}, output{Revision: 11}),
			op(0, 4, 5, input{Kind: opRevoke, Lease: 7}, output{}),
			op(0, 6, 7, get("a"), output{Revision: 12}),
		}, true},
		{"key survives its lease's revocation", []porcupine.Operation{
			op(0, 0, 1, input{Kind: opGrant, Lease: 7}, output{}),
			op(0, 2, 3, input{Kind: opPut, Key: "a", Value: "1", Lease: 7}, output{Revision: 11}),
			op(0, 4, 5, input{Kind: opRevoke, Lease: 7}, output{}),
			op(0, 6, 7, get("a"), output{Revision: 12, KVs: []kvOut{{Key: "a", Value: "1", CreateRevision: 11, ModRevision: 11, Version: 1, Lease: 7}}}),
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := porcupine.CheckOperationsTimeout(newModel(10), tc.ops, 10*time.Second)
			if (res == porcupine.Ok) != tc.legal {
				t.Fatalf("result %s, want legal=%v", res, tc.legal)
			}
		})
	}
}

// The log checks find lost, moved and phantom writes.
func TestCheckLog(t *testing.T) {
	history := []porcupine.Operation{
		op(0, 0, 1, input{Kind: opPut, Key: "a", Value: "v1"}, output{Revision: 11}),
		op(0, 2, 3, input{Kind: opPut, Key: "a", Value: "v2"}, output{Revision: 12}),
		op(0, 4, 5, input{Kind: opPut, Key: "b", Value: "v3"}, output{Revision: 13}),
	}
	good := []event{
		{Rev: 11, Key: "a", Value: "v1", Create: 11, Version: 1},
		{Rev: 12, Key: "a", Value: "v2", Create: 11, Version: 2},
		{Rev: 13, Key: "b", Value: "v3", Create: 13, Version: 1},
	}
	r := &Report{}
	r.checkLog(good, history, 10, 13, true)
	if r.ViolationCount() != 0 {
		t.Fatalf("good log: %v", r.Violations)
	}
	lost := []event{good[0], good[2]}
	lost[1].Rev = 12
	r = &Report{}
	r.checkLog(lost, history, 10, 13, true)
	if r.LostWrites() != 2 { // v2 missing, v3 at the wrong revision
		t.Fatalf("lost writes = %d, want 2: %v", r.LostWrites(), r.Violations)
	}
	phantom := append(append([]event(nil), good...), event{Rev: 14, Key: "a", Value: "zz", Create: 11, Version: 3})
	r = &Report{}
	r.checkLog(phantom, history, 10, 14, true)
	if r.counts["log"] != 1 {
		t.Fatalf("phantom write not found: %v", r.Violations)
	}
	// A watcher that skipped an event, and one that went back in time.
	r = &Report{}
	r.checkWatchers([]watcherResult{
		{ID: 1, StartRev: 11, Events: []event{good[0], good[2]}},
		{ID: 2, StartRev: 11, Events: []event{good[0], good[1], good[0], good[2]}},
		{ID: 3, StartRev: 12, Events: []event{good[1], good[2]}},
	}, good, 13)
	if r.counts["watch"] != 2 {
		t.Fatalf("watch violations = %d, want 2: %v", r.counts["watch"], r.Violations)
	}
}

// A run against a healthy three-member cluster finds nothing wrong.
func TestRunHealthyCluster(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Quiet: true})
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	rep, err := Run(context.Background(), Config{
		Endpoints: eps, Duration: 3 * time.Second, Clients: 6, Keys: 5, Watchers: 4, Exclusive: true, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if !rep.OK() {
		t.Fatalf("violations in a healthy run:\n%s", rep)
	}
	if rep.Ops < 100 || rep.LogEvents == 0 || rep.Watchers != 4 {
		t.Fatalf("run too small: %d ops, %d events, %d watchers", rep.Ops, rep.LogEvents, rep.Watchers)
	}
}

// Unknown outcomes are settled from the change log and bounded in time.
func TestResolveUnknown(t *testing.T) {
	p := "/p/"
	history := []porcupine.Operation{
		op(0, 0, 0, input{Kind: opPut, Key: p + "k1", Value: "c0-1"}, output{Unknown: true}),
		op(1, 0, 0, input{Kind: opPut, Key: p + "k1", Value: "c1-1"}, output{Unknown: true}),
		op(2, 0, 0, input{Kind: opDelete, Key: p + "k1", Value: "c2-1"}, output{Unknown: true}),
		op(3, 5, 9, input{Kind: opGet, Key: p + "k1"}, output{Revision: 12}),
		op(3, 10, 11, input{Kind: opGrant, Lease: 7}, output{Unknown: true}),
		op(3, 12, 13, input{Kind: opGrant, Lease: 8}, output{Unknown: true}),
		op(4, 14, 15, input{Kind: opPut, Key: p + "k2", Value: "c4-1", Lease: 8}, output{Revision: 13}),
	}
	log := []event{
		{Rev: 11, Key: p + "k1", Value: "c0-1", Create: 11, Version: 1},
		{Rev: 12, Key: p + "k1", Delete: true},
		{Rev: 12, Key: p + "m/c2-1", Create: 12, Version: 1},
		{Rev: 13, Key: p + "k2", Value: "c4-1", Create: 13, Version: 1, Lease: 8},
	}
	got := resolveUnknown(p, history, log)
	if len(got) != 5 {
		t.Fatalf("got %d operations, want 5 (unseen put and unused grant dropped): %+v", len(got), got)
	}
	if o := got[0].Output.(output); o.Unknown || o.Revision != 11 || got[0].Return != 9 {
		t.Fatalf("put settled as %+v returning %d, want revision 11 returning by 9", o, got[0].Return)
	}
	if o := got[1].Output.(output); o.Unknown || o.Revision != 12 || o.Deleted != 1 {
		t.Fatalf("delete settled as %+v", o)
	}
	if in := got[3].Input.(input); in.Kind != opGrant || in.Lease != 8 || got[3].Return != 15 {
		t.Fatalf("grant of the used lease: %+v returning %d", in, got[3].Return)
	}
	if res := porcupine.CheckOperations(newModel(10), got); !res {
		t.Fatal("settled history is not linearizable")
	}
}
