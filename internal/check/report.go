package check

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// maxListed bounds how many violations of one kind a report lists (all are counted).
const maxListed = 20

// KindStats counts the operations of one kind by outcome.
type KindStats struct {
	OK      int // acknowledged (including definite failures such as "lease not found")
	Unknown int // the outcome could not be learnt (timeouts, lost connections)
}

// Report is what a run saw and found.
type Report struct {
	Seed          int64
	Prefix        string
	StartRevision int64
	EndRevision   int64
	WorkloadTime  time.Duration
	Kinds         map[string]*KindStats
	Ops           int // operations recorded (failed reads are not recorded)
	LogEvents     int // events in the change log of the run's prefix
	Watchers      int
	WatchEvents   int // events received by all watchers
	PastReads     int // reads at past revisions checked against the change log
	HistoryOps    int // operations in the checked history (unknown writes resolved or dropped)
	Linearizable  string
	CheckTime     time.Duration

	// Violations by kind: "linearizability", "lost write", "log", "watch".
	Violations map[string][]string
	counts     map[string]int
}

func (r *Report) addViolation(kind, format string, args ...any) {
	if r.Violations == nil {
		r.Violations = map[string][]string{}
		r.counts = map[string]int{}
	}
	r.counts[kind]++
	if len(r.Violations[kind]) < maxListed {
		r.Violations[kind] = append(r.Violations[kind], fmt.Sprintf(format, args...))
	}
}

// ViolationCount is the number of violations found, of every kind.
func (r *Report) ViolationCount() int {
	n := 0
	for _, c := range r.counts {
		n += c
	}
	return n
}

// LostWrites is the number of acknowledged writes missing from the cluster's change log.
func (r *Report) LostWrites() int { return r.counts["lost write"] }

// OK reports whether the run found nothing wrong. A linearizability search that ran out of
// time ("Unknown") is not a violation, but it is not a pass either: OK is false then.
func (r *Report) OK() bool {
	return r.ViolationCount() == 0 && r.Linearizable == string(porcupine.Ok)
}

// String renders the report for people.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, prefix %s, revisions %d..%d, workload %v\n", r.Seed, r.Prefix, r.StartRevision, r.EndRevision, r.WorkloadTime.Round(time.Millisecond))
	kinds := make([]string, 0, len(r.Kinds))
	for k := range r.Kinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprintf(&b, "operations: %d", r.Ops)
	for _, k := range kinds {
		s := r.Kinds[k]
		fmt.Fprintf(&b, "  %s %d", k, s.OK+s.Unknown)
		if s.Unknown > 0 {
			fmt.Fprintf(&b, " (%d unknown)", s.Unknown)
		}
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "change log: %d events; watchers: %d, %d events received; reads at past revisions: %d\n", r.LogEvents, r.Watchers, r.WatchEvents, r.PastReads)
	fmt.Fprintf(&b, "linearizability: %s (%d operations checked in %v)\n", r.Linearizable, r.HistoryOps, r.CheckTime.Round(time.Millisecond))
	fmt.Fprintf(&b, "lost writes: %d\n", r.LostWrites())
	fmt.Fprintf(&b, "violations: %d\n", r.ViolationCount())
	vk := make([]string, 0, len(r.Violations))
	for k := range r.Violations {
		vk = append(vk, k)
	}
	sort.Strings(vk)
	for _, k := range vk {
		fmt.Fprintf(&b, "  %s (%d):\n", k, r.counts[k])
		for _, v := range r.Violations[k] {
			fmt.Fprintf(&b, "    %s\n", v)
		}
	}
	return b.String()
}

func (r *Report) countOps(history []porcupine.Operation) {
	r.Ops = len(history)
	for _, op := range history {
		in, out := op.Input.(input), op.Output.(output)
		s := r.Kinds[string(in.Kind)]
		if s == nil {
			s = &KindStats{}
			r.Kinds[string(in.Kind)] = s
		}
		if out.Unknown {
			s.Unknown++
		} else {
			s.OK++
		}
	}
}

// checkLog checks the change log of the run's prefix on its own and against the history:
// revisions only go forward, every value written appears at most once and only if some
// client wrote it, each key's versions and create revisions follow from its history, and
// every acknowledged write is there at the revision it was acknowledged with.
func (r *Report) checkLog(log []event, history []porcupine.Operation, startRev, endRev int64, exclusive bool) {
	issued := map[string]bool{}
	deletes := map[string]bool{}
	for _, op := range history {
		in := op.Input.(input)
		switch in.Kind {
		case opPut, opCAS:
			issued[in.Value] = true
		case opDelete:
			deletes[in.Value] = true
		}
	}
	type keyHist struct {
		version int64
		create  int64
	}
	keys := map[string]keyHist{}
	seenValue := map[string]int64{}
	seenAt := map[int64]map[string]bool{}
	prev := startRev
	for _, e := range log {
		if e.Rev < prev {
			r.addViolation("log", "revision went back from %d to %d (key %s)", prev, e.Rev, e.Key)
		}
		if exclusive && e.Rev > prev+1 {
			r.addViolation("log", "revisions %d..%d are missing from the change log", prev+1, e.Rev-1)
		}
		if seenAt[e.Rev] == nil {
			seenAt[e.Rev] = map[string]bool{}
		}
		if seenAt[e.Rev][e.Key] {
			r.addViolation("log", "key %s changed twice at revision %d", e.Key, e.Rev)
		}
		seenAt[e.Rev][e.Key] = true
		prev = e.Rev
		h := keys[e.Key]
		if e.Delete {
			if h.version == 0 {
				r.addViolation("log", "delete of absent key %s at revision %d", e.Key, e.Rev)
			}
			delete(keys, e.Key)
			continue
		}
		if id, ok := isMarker(r.Prefix, e.Key); ok {
			if !deletes[id] {
				r.addViolation("log", "marker %s at revision %d names no delete a client issued", e.Key, e.Rev)
			}
		} else {
			if !issued[e.Value] {
				r.addViolation("log", "value %q of key %s at revision %d was never written by a client", e.Value, e.Key, e.Rev)
			}
			if at, dup := seenValue[e.Value]; dup {
				r.addViolation("log", "value %q applied twice, at revisions %d and %d", e.Value, at, e.Rev)
			}
			seenValue[e.Value] = e.Rev
		}
		wantCreate := h.create
		if h.version == 0 {
			wantCreate = e.Rev
		}
		if e.Version != h.version+1 || e.Create != wantCreate {
			r.addViolation("log", "key %s at revision %d has version %d and create revision %d, want %d and %d",
				e.Key, e.Rev, e.Version, e.Create, h.version+1, wantCreate)
		}
		keys[e.Key] = keyHist{version: e.Version, create: e.Create}
	}
	if exclusive && len(log) > 0 && prev < endRev {
		r.addViolation("log", "revisions %d..%d are missing from the change log", prev+1, endRev)
	}

	// Acknowledged writes.
	putAt := map[string]int64{} // value -> revision
	delAt := map[int64]map[string]bool{}
	for _, e := range log {
		if e.Delete {
			if delAt[e.Rev] == nil {
				delAt[e.Rev] = map[string]bool{}
			}
			delAt[e.Rev][e.Key] = true
		} else if id, ok := isMarker(r.Prefix, e.Key); ok {
			putAt["marker:"+id] = e.Rev
		} else {
			putAt[e.Value] = e.Rev
		}
	}
	for _, op := range history {
		in, out := op.Input.(input), op.Output.(output)
		if out.Unknown || out.LeaseNotFound {
			continue
		}
		switch {
		case in.Kind == opPut || (in.Kind == opCAS && out.Succeeded):
			if rev, ok := putAt[in.Value]; !ok {
				r.addViolation("lost write", "%s of %s=%s acknowledged at revision %d is not in the change log", in.Kind, in.Key, in.Value, out.Revision)
			} else if rev != out.Revision {
				r.addViolation("lost write", "%s of %s=%s acknowledged at revision %d is in the change log at revision %d", in.Kind, in.Key, in.Value, out.Revision, rev)
			}
		case in.Kind == opDelete:
			if rev, ok := putAt["marker:"+in.Value]; !ok || rev != out.Revision {
				r.addViolation("lost write", "delete %s of %s acknowledged at revision %d: its marker is not in the change log at that revision", in.Value, in.Key, out.Revision)
			} else if (out.Deleted > 0) != delAt[out.Revision][in.Key] {
				r.addViolation("lost write", "delete %s of %s acknowledged at revision %d with deleted=%d disagrees with the change log", in.Value, in.Key, out.Revision, out.Deleted)
			}
		}
	}
}

// checkWatchers compares what each watcher received with the change log: from its start
// revision up to the end of the run, the same events in the same order, and a previous
// value that matches the log where one was asked for.
func (r *Report) checkWatchers(results []watcherResult, log []event, endRev int64) {
	prevOf := map[int]*event{} // index in log -> the key's previous put, if any
	last := map[string]int{}
	for i, e := range log {
		if j, ok := last[e.Key]; ok && !log[j].Delete {
			prevOf[i] = &log[j]
		}
		last[e.Key] = i
	}
	for _, w := range results {
		if w.StartRev == 0 {
			r.addViolation("watch", "watcher %d did not start: %s", w.ID, w.Err)
			continue
		}
		r.Watchers++
		r.WatchEvents += len(w.Events)
		if w.Compacted != 0 {
			continue // cancelled by a compaction (a cluster with auto-compaction): nothing to compare
		}
		var got []event
		for _, e := range w.Events {
			if e.Rev <= endRev {
				got = append(got, e)
			}
		}
		first := sort.Search(len(log), func(i int) bool { return log[i].Rev >= w.StartRev })
		want := log[first:]
		for i := 0; i < len(got) || i < len(want); i++ {
			if i >= len(got) {
				r.addViolation("watch", "watcher %d (from revision %d) missed %d events from revision %d on", w.ID, w.StartRev, len(want)-i, want[i].Rev)
				break
			}
			if i >= len(want) {
				r.addViolation("watch", "watcher %d (from revision %d) received %d events more than the log has, first at revision %d", w.ID, w.StartRev, len(got)-i, got[i].Rev)
				break
			}
			g, x := got[i], want[i]
			if g.Rev != x.Rev || g.Key != x.Key || g.Delete != x.Delete || g.Value != x.Value || g.Version != x.Version || g.Create != x.Create || g.Lease != x.Lease {
				r.addViolation("watch", "watcher %d (from revision %d) event %d: got %s, the log has %s", w.ID, w.StartRev, i, describeEvent(g), describeEvent(x))
				break
			}
			if w.PrevKV {
				p := prevOf[first+i]
				switch {
				case p == nil && g.HasPrev:
					r.addViolation("watch", "watcher %d: event at revision %d of %s carries a previous value %q, but the key had none", w.ID, g.Rev, g.Key, g.Prev.Value)
				case p != nil && (!g.HasPrev || g.Prev.Value != p.Value || g.Prev.ModRevision != p.Rev):
					r.addViolation("watch", "watcher %d: event at revision %d of %s carries previous %+v, want value %q at revision %d", w.ID, g.Rev, g.Key, g.Prev, p.Value, p.Rev)
				}
			}
		}
	}
}

// checkPastReads compares reads at past revisions with the state the change log gives at
// those revisions.
func (r *Report) checkPastReads(reads []pastRead, log []event) {
	sort.Slice(reads, func(i, j int) bool { return reads[i].Rev < reads[j].Rev })
	state := map[string]event{}
	next := 0
	for _, pr := range reads {
		r.PastReads++
		if pr.Err != "" {
			r.addViolation("past read", "%s", pr.Err)
			continue
		}
		for next < len(log) && log[next].Rev <= pr.Rev {
			e := log[next]
			next++
			if _, marker := isMarker(r.Prefix, e.Key); marker {
				continue
			}
			if e.Delete {
				delete(state, e.Key)
			} else {
				state[e.Key] = e
			}
		}
		want := sortedKeys(state)
		ok := len(want) == len(pr.KVs)
		for i := 0; ok && i < len(want); i++ {
			e, kv := state[want[i]], pr.KVs[i]
			ok = kv.Key == e.Key && kv.Value == e.Value && kv.ModRevision == e.Rev && kv.CreateRevision == e.Create &&
				kv.Version == e.Version && kv.Lease == e.Lease
		}
		if !ok {
			var got []string
			for _, kv := range pr.KVs {
				got = append(got, fmt.Sprintf("%s=%s@%d", kv.Key, kv.Value, kv.ModRevision))
			}
			var exp []string
			for _, k := range want {
				exp = append(exp, fmt.Sprintf("%s=%s@%d", k, state[k].Value, state[k].Rev))
			}
			r.addViolation("past read", "read at revision %d returned %v, the change log gives %v", pr.Rev, got, exp)
		}
	}
}

func describeEvent(e event) string {
	if e.Delete {
		return fmt.Sprintf("DELETE %s @%d", e.Key, e.Rev)
	}
	return fmt.Sprintf("PUT %s=%s @%d (v%d c%d l%x)", e.Key, e.Value, e.Rev, e.Version, e.Create, e.Lease)
}
