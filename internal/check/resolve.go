package check

import (
	"math"
	"sort"

	"github.com/anishathalye/porcupine"
)

// resolveUnknown settles, from the cluster's change log, the writes whose outcome the client
// never learnt, and bounds when they took effect. An operation left open until the end of
// time is concurrent with everything after its call, and a few dozen of those make the
// linearizability search explode; with the log most of them become ordinary operations:
//
//   - a put or compare-and-swap wrote a unique value: if the value is in the log at revision
//     R, the operation took effect at R; if not, it never took effect (or only after the last
//     recorded operation, which no recorded operation can tell apart), and it is dropped;
//   - a delete wrote a marker key named after it: the same reasoning, with the marker;
//   - a lease grant has no revision: it is kept only if a recorded operation used the lease
//     successfully, and must then have taken effect before the first such operation returned;
//   - a revocation is dropped if another revocation of the lease succeeded (one of them must
//     have found the lease gone), settled at revision R if the log shows the lease's keys
//     deleted at R without a delete marker, kept open until the first "lease not found" that
//     followed it otherwise, and dropped if nothing observed it.
//
// An operation settled at revision R took effect before any response carrying a revision of
// R or more was sent, so it returns, at the latest, when the first such response returned.
func resolveUnknown(prefix string, history []porcupine.Operation, log []event) []porcupine.Operation {
	putAt := map[string]int64{}
	markerAt := map[string]int64{}
	markerRevs := map[int64]bool{}
	revokedAt := map[int64]int64{}
	lastLease := map[string]int64{} // key -> lease of its current value
	deleteRevs := map[int64][]string{}
	for _, e := range log {
		if e.Delete {
			deleteRevs[e.Rev] = append(deleteRevs[e.Rev], e.Key)
			continue
		}
		if id, ok := isMarker(prefix, e.Key); ok {
			markerAt[id] = e.Rev
			markerRevs[e.Rev] = true
			continue
		}
		putAt[e.Value] = e.Rev
	}
	// Deletions without a marker at their revision come from revocations (leases in this
	// workload never expire during a run).
	for _, e := range log {
		switch {
		case e.Delete:
			if l := lastLease[e.Key]; l != 0 && !markerRevs[e.Rev] {
				if _, seen := revokedAt[l]; !seen {
					revokedAt[l] = e.Rev
				}
			}
			delete(lastLease, e.Key)
		default:
			if _, ok := isMarker(prefix, e.Key); !ok {
				lastLease[e.Key] = e.Lease
			}
		}
	}
	bound := returnBounds(history)

	// What recorded operations observed about leases.
	usedBy := map[int64]int64{}     // lease -> earliest return of a successful use
	revokedOK := map[int64]bool{}   // lease -> a revocation of it succeeded
	notFound := map[int64][]int64{} // lease -> (call, return) pairs of "lease not found" answers, flattened
	for _, op := range history {
		in, out := op.Input.(input), op.Output.(output)
		if out.Unknown || (in.Kind != opPut && in.Kind != opRevoke) || in.Lease == 0 {
			continue
		}
		if out.LeaseNotFound {
			notFound[in.Lease] = append(notFound[in.Lease], op.Call, op.Return)
			continue
		}
		if in.Kind == opRevoke {
			revokedOK[in.Lease] = true
		}
		if r, ok := usedBy[in.Lease]; !ok || op.Return < r {
			usedBy[in.Lease] = op.Return
		}
	}

	out := make([]porcupine.Operation, 0, len(history))
	for _, op := range history {
		in, o := op.Input.(input), op.Output.(output)
		if !o.Unknown {
			out = append(out, op)
			continue
		}
		switch in.Kind {
		case opPut, opCAS:
			rev, ok := putAt[in.Value]
			if !ok {
				continue
			}
			op.Output = output{Revision: rev, Succeeded: true}
			op.Return = bound(rev)
		case opDelete:
			rev, ok := markerAt[in.Value]
			if !ok {
				continue
			}
			res := output{Revision: rev}
			for _, k := range deleteRevs[rev] {
				if k == in.Key {
					res.Deleted = 1
				}
			}
			op.Output = res
			op.Return = bound(rev)
		case opGrant:
			r, ok := usedBy[in.Lease]
			if !ok {
				continue
			}
			if rev, revoked := revokedAt[in.Lease]; revoked {
				r = min(r, bound(rev))
			}
			op.Return = r
		case opRevoke:
			if revokedOK[in.Lease] {
				continue
			}
			if rev, ok := revokedAt[in.Lease]; ok {
				op.Output = output{}
				op.Return = bound(rev)
				break
			}
			first := int64(math.MaxInt64)
			nf := notFound[in.Lease]
			for i := 0; i < len(nf); i += 2 {
				if nf[i] > op.Call && nf[i+1] < first {
					first = nf[i+1]
				}
			}
			if first == math.MaxInt64 {
				continue
			}
			op.Return = first
		default:
			continue
		}
		if op.Return < op.Call {
			op.Return = op.Call
		}
		out = append(out, op)
	}
	return out
}

// returnBounds returns a function giving, for a revision R, the earliest return time of a
// recorded operation whose response carried a revision of R or more (MaxInt64 if none).
func returnBounds(history []porcupine.Operation) func(int64) int64 {
	type rr struct{ rev, ret int64 }
	var obs []rr
	for _, op := range history {
		in, out := op.Input.(input), op.Output.(output)
		if out.Unknown || out.LeaseNotFound || in.Kind == opGrant || in.Kind == opRevoke {
			continue
		}
		obs = append(obs, rr{out.Revision, op.Return})
	}
	sort.Slice(obs, func(i, j int) bool { return obs[i].rev < obs[j].rev })
	// suffix[i] = min return over obs[i:].
	suffix := make([]int64, len(obs)+1)
	suffix[len(obs)] = math.MaxInt64
	for i := len(obs) - 1; i >= 0; i-- {
		suffix[i] = min(suffix[i+1], obs[i].ret)
	}
	return func(rev int64) int64 {
		i := sort.Search(len(obs), func(i int) bool { return obs[i].rev >= rev })
		return suffix[i]
	}
}
