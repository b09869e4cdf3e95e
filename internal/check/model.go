package check

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// opKind names an operation of the workload.
type opKind string

const (
	opPut    opKind = "put"    // Put(key, value[, lease])
	opGet    opKind = "get"    // linearizable Range of one key
	opList   opKind = "list"   // linearizable Range of the whole prefix
	opDelete opKind = "delete" // DeleteRange of one key
	opCAS    opKind = "cas"    // Txn: value(key) == expected (or absent) ? put : get
	opGrant  opKind = "grant"  // LeaseGrant with a client-chosen id
	opRevoke opKind = "revoke" // LeaseRevoke
)

// input is what a client asked for.
type input struct {
	Kind     opKind
	Key      string
	Value    string // put/cas: the value written (unique per operation)
	Expect   string // cas: the value compared against; "" means "key absent"
	Lease    int64  // put: lease to attach (0 none); grant/revoke: the lease
	ClientID int
}

// kvOut is one key-value pair as a read returned it.
type kvOut struct {
	Key            string
	Value          string
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64
}

// output is what a client got back. Unknown marks a write whose outcome the client could not
// learn (timeout, lost connection): it may or may not have taken effect.
type output struct {
	Unknown       bool
	LeaseNotFound bool    // put with a lease / revoke: the lease did not exist
	Revision      int64   // header revision
	Succeeded     bool    // cas
	Deleted       int64   // delete
	KVs           []kvOut // get, list, failed cas
}

// keyState is the model's view of one key. A write whose outcome is unknown leaves the key's
// revisions known only as lower bounds (modKnown/createKnown false) until a read reveals them.
type keyState struct {
	value       string
	version     int64
	lease       int64
	mod         int64
	modKnown    bool
	create      int64
	createKnown bool
}

// state is the model state. It is never mutated once built: steps copy what they change.
type state struct {
	rev    int64 // lower bound of the store revision (exact after a read)
	keys   map[string]keyState
	leases map[int64]bool
}

func (s *state) clone() *state {
	n := &state{rev: s.rev, keys: make(map[string]keyState, len(s.keys)), leases: make(map[int64]bool, len(s.leases))}
	for k, v := range s.keys {
		n.keys[k] = v
	}
	for k := range s.leases {
		n.leases[k] = true
	}
	return n
}

// newModel returns the porcupine model of the workload's semantics. startRev is the store
// revision read before the workload began (the model's lower bound).
//
// The model checks revisions as they must behave in any cluster, including one that other
// clients write to: a write's revision is above every revision seen before it, a read's
// header revision is at least every revision seen before it, and each key's version,
// create and mod revisions, lease and value are exact.
func newModel(startRev int64) porcupine.Model {
	return porcupine.Model{
		Init: func() interface{} {
			return &state{rev: startRev, keys: map[string]keyState{}, leases: map[int64]bool{}}
		},
		Step: func(st, in, out interface{}) (bool, interface{}) {
			return step(st.(*state), in.(input), out.(output))
		},
		Equal: func(a, b interface{}) bool { return equalStates(a.(*state), b.(*state)) },
		Hash:  func(st interface{}) uint64 { return hashState(st.(*state)) },
		DescribeOperation: func(in, out interface{}) string {
			return describeOp(in.(input), out.(output))
		},
		DescribeState: func(st interface{}) string { return describeState(st.(*state)) },
	}
}

func step(s *state, in input, out output) (bool, *state) {
	switch in.Kind {
	case opGet:
		return stepRead(s, []string{in.Key}, out)
	case opList:
		keys := make([]string, 0, len(s.keys))
		for k := range s.keys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return stepRead(s, keys, out)
	case opPut:
		if in.Lease != 0 && !s.leases[in.Lease] {
			// The put must have failed with "lease not found" (or its outcome is unknown).
			return out.Unknown || out.LeaseNotFound, s
		}
		if out.LeaseNotFound {
			return false, s
		}
		return stepWrite(s, in.Key, in.Value, in.Lease, out)
	case opCAS:
		cur, exists := s.keys[in.Key]
		match := (in.Expect == "" && !exists) || (in.Expect != "" && exists && cur.value == in.Expect)
		if out.Unknown {
			if !match {
				return true, s
			}
			return stepWrite(s, in.Key, in.Value, 0, out)
		}
		if out.Succeeded != match {
			return false, s
		}
		if match {
			return stepWrite(s, in.Key, in.Value, 0, out)
		}
		return stepRead(s, []string{in.Key}, out)
	case opDelete:
		// A delete always writes its marker key, so it always takes a revision.
		_, exists := s.keys[in.Key]
		if out.Unknown {
			n := s.clone()
			delete(n.keys, in.Key)
			n.rev++
			return true, n
		}
		if out.Revision <= s.rev || (out.Deleted == 1) != exists || out.Deleted > 1 {
			return false, s
		}
		n := s.clone()
		delete(n.keys, in.Key)
		n.rev = out.Revision
		return true, n
	case opGrant:
		if s.leases[in.Lease] {
			return false, s // ids are unique per run: a second grant cannot succeed
		}
		n := s.clone()
		n.leases[in.Lease] = true
		return true, n
	case opRevoke:
		if !s.leases[in.Lease] {
			return out.Unknown || out.LeaseNotFound, s
		}
		if out.LeaseNotFound {
			return false, s
		}
		n := s.clone()
		delete(n.leases, in.Lease)
		deleted := false
		for k, v := range n.keys {
			if v.lease == in.Lease {
				delete(n.keys, k)
				deleted = true
			}
		}
		if deleted {
			n.rev++ // the revocation's revision is not reported: keep a lower bound
		}
		return true, n
	}
	return false, s
}

// stepWrite applies a put of value to key; out.Revision is its revision unless out.Unknown.
func stepWrite(s *state, key, value string, lease int64, out output) (bool, *state) {
	if !out.Unknown && out.Revision <= s.rev {
		return false, s
	}
	n := s.clone()
	cur, exists := n.keys[key]
	ks := keyState{value: value, version: cur.version + 1, lease: lease}
	if out.Unknown {
		n.rev++
		ks.mod, ks.modKnown = n.rev, false
	} else {
		n.rev = out.Revision
		ks.mod, ks.modKnown = out.Revision, true
	}
	if exists {
		ks.create, ks.createKnown = cur.create, cur.createKnown
	} else {
		ks.version = 1
		ks.create, ks.createKnown = ks.mod, ks.modKnown
	}
	n.keys[key] = ks
	return true, n
}

// stepRead checks a read of keys (sorted) against the state, refining revisions the read
// reveals.
func stepRead(s *state, keys []string, out output) (bool, *state) {
	if out.Unknown || out.Revision < s.rev {
		return false, s
	}
	var want []string
	for _, k := range keys {
		if _, ok := s.keys[k]; ok {
			want = append(want, k)
		}
	}
	if len(out.KVs) != len(want) {
		return false, s
	}
	n := s
	for i, kv := range out.KVs {
		cur := s.keys[want[i]]
		if kv.Key != want[i] || kv.Value != cur.value || kv.Version != cur.version || kv.Lease != cur.lease {
			return false, s
		}
		if kv.ModRevision > out.Revision || kv.CreateRevision > kv.ModRevision {
			return false, s
		}
		if !revMatches(cur.mod, cur.modKnown, kv.ModRevision) || !revMatches(cur.create, cur.createKnown, kv.CreateRevision) {
			return false, s
		}
		if !cur.modKnown || !cur.createKnown {
			if n == s {
				n = s.clone()
			}
			cur.mod, cur.modKnown = kv.ModRevision, true
			cur.create, cur.createKnown = kv.CreateRevision, true
			n.keys[kv.Key] = cur
		}
	}
	if out.Revision != s.rev {
		if n == s {
			n = s.clone()
		}
		n.rev = out.Revision
	}
	return true, n
}

// revMatches reports whether an observed revision fits a known one, or a lower bound.
func revMatches(rev int64, known bool, got int64) bool {
	if known {
		return got == rev
	}
	return got >= rev
}

func equalStates(a, b *state) bool {
	if a.rev != b.rev || len(a.keys) != len(b.keys) || len(a.leases) != len(b.leases) {
		return false
	}
	for k, v := range a.keys {
		if w, ok := b.keys[k]; !ok || w != v {
			return false
		}
	}
	for k := range a.leases {
		if !b.leases[k] {
			return false
		}
	}
	return true
}

func hashState(s *state) uint64 {
	// Order-independent: the sum of per-entry hashes.
	h := uint64(s.rev) * 0x9e3779b97f4a7c15
	for k, v := range s.keys {
		e := strHash(strHash(fnvOffset, k), v.value)
		e = mix(e ^ uint64(v.version) ^ uint64(v.lease)<<1 ^ uint64(v.mod)<<2)
		h += e
	}
	for id := range s.leases {
		h += mix(uint64(id))
	}
	return h
}

const fnvOffset = 14695981039346656037

// strHash continues an FNV-1a hash over s.
func strHash(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h ^ 0xff
}

// mix is a 64-bit finaliser (xorshift-multiply).
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func describeOp(in input, out output) string {
	var b strings.Builder
	switch in.Kind {
	case opPut:
		fmt.Fprintf(&b, "put(%s, %s", in.Key, in.Value)
		if in.Lease != 0 {
			fmt.Fprintf(&b, ", lease %x", in.Lease)
		}
		b.WriteString(")")
	case opCAS:
		fmt.Fprintf(&b, "cas(%s, %q -> %s)", in.Key, in.Expect, in.Value)
	case opGet, opDelete:
		fmt.Fprintf(&b, "%s(%s)", in.Kind, in.Key)
	case opList:
		b.WriteString("list()")
	case opGrant, opRevoke:
		fmt.Fprintf(&b, "%s(%x)", in.Kind, in.Lease)
	}
	b.WriteString(" -> ")
	switch {
	case out.Unknown:
		b.WriteString("unknown")
	case out.LeaseNotFound:
		b.WriteString("lease not found")
	default:
		fmt.Fprintf(&b, "rev %d", out.Revision)
		if in.Kind == opCAS {
			fmt.Fprintf(&b, " succeeded=%v", out.Succeeded)
		}
		if in.Kind == opDelete {
			fmt.Fprintf(&b, " deleted=%d", out.Deleted)
		}
		for _, kv := range out.KVs {
			fmt.Fprintf(&b, " [%s=%s c%d m%d v%d l%x]", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
		}
	}
	return b.String()
}

func describeState(s *state) string {
	keys := make([]string, 0, len(s.keys))
	for k := range s.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "rev>=%d", s.rev)
	for _, k := range keys {
		v := s.keys[k]
		fmt.Fprintf(&b, " %s=%s(v%d m%d)", k, v.value, v.version, v.mod)
	}
	return b.String()
}
