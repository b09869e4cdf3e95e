package auth

import (
	"bytes"
	"sort"

	"go.etcd.io/etcd/api/v3/authpb"
)

// A bound is one end of a key interval. An empty bound stands for "after every key", at either
// end, as etcd orders them: an interval whose end is empty reaches the end of the key space.
type bound []byte

func (b bound) cmp(o bound) int {
	switch {
	case len(b) == 0 && len(o) == 0:
		return 0
	case len(b) == 0:
		return 1
	case len(o) == 0:
		return -1
	}
	return bytes.Compare(b, o)
}

// interval is the half-open key interval [begin, end).
type interval struct{ begin, end bound }

// meets reports whether the query interval q meets x: q is neither wholly before x (it begins
// before x and ends at or before x's begin) nor after it (it begins at or after x's end). For
// non-empty intervals this is plain overlap; it is written this way so that a query whose end
// is not above its begin (a range read with key > range_end) is judged as etcd judges it.
func (q interval) meets(x interval) bool {
	before := q.begin.cmp(x.begin) < 0 && q.end.cmp(x.begin) <= 0
	after := q.begin.cmp(x.end) >= 0
	return !before && !after
}

// pointInterval is the interval holding key alone: [key, key+"\x00").
func pointInterval(key []byte) interval {
	end := make([]byte, len(key)+1)
	copy(end, key)
	return interval{begin: key, end: end}
}

// isOpenEnded reports whether a range end is "\x00", etcd's "every key from key on".
func isOpenEnded(end []byte) bool { return len(end) == 1 && end[0] == 0 }

// permInterval is the interval a granted permission covers: its key alone when it has no range
// end, everything from its key on when the range end is "\x00", else [key, range end).
func permInterval(p *authpb.Permission) interval {
	switch {
	case len(p.RangeEnd) == 0:
		return pointInterval(p.Key)
	case isOpenEnded(p.RangeEnd):
		return interval{begin: p.Key}
	default:
		return interval{begin: p.Key, end: p.RangeEnd}
	}
}

// validPermRange reports whether a permission may be granted on [key, rangeEnd): a key is
// required, and a range end must be above it or be "\x00".
func validPermRange(key, rangeEnd []byte) bool {
	if len(key) == 0 {
		return false
	}
	if len(rangeEnd) == 0 || isOpenEnded(rangeEnd) {
		return true
	}
	return bound(key).cmp(rangeEnd) < 0
}

// intervalSet is the union of the intervals a user may read (or write), sorted by begin.
type intervalSet []interval

func (s intervalSet) sorted() intervalSet {
	sort.SliceStable(s, func(i, j int) bool { return s[i].begin.cmp(s[j].begin) < 0 })
	return s
}

// coversPoint reports whether some interval holds key.
func (s intervalSet) coversPoint(key []byte) bool {
	pt := pointInterval(key)
	for _, iv := range s {
		if pt.meets(iv) {
			return true
		}
	}
	return false
}

// covers reports whether the intervals overlapping q leave no gap over q: taken in order of
// their begin, each starts at or before the furthest end reached so far, the first starts at or
// before q's begin and the furthest end reaches q's end.
func (s intervalSet) covers(q interval) bool {
	var lo, hi bound
	found := false
	for _, iv := range s {
		if !q.meets(iv) {
			continue
		}
		if !found {
			lo, hi, found = iv.begin, iv.end, true
			continue
		}
		if hi.cmp(iv.begin) < 0 {
			return false
		}
		if iv.end.cmp(hi) > 0 {
			hi = iv.end
		}
	}
	return found && lo.cmp(q.begin) <= 0 && hi.cmp(q.end) >= 0
}

// userPerms are the merged permissions of one user's roles.
type userPerms struct {
	read, write intervalSet
}

func mergePerms(u *authpb.User, roles map[string]*authpb.Role) *userPerms {
	up := &userPerms{}
	for _, name := range u.Roles {
		r, ok := roles[name]
		if !ok {
			continue
		}
		for _, p := range r.KeyPermission {
			iv := permInterval(p)
			switch p.PermType {
			case authpb.Permission_READ:
				up.read = append(up.read, iv)
			case authpb.Permission_WRITE:
				up.write = append(up.write, iv)
			case authpb.Permission_READWRITE:
				up.read = append(up.read, iv)
				up.write = append(up.write, iv)
			}
		}
	}
	up.read.sorted()
	up.write.sorted()
	return up
}

// permits reports whether the permissions allow the access on key (a single key when end is
// empty, else [key, end), with "\x00" meaning every key from key on).
func (up *userPerms) permits(typ authpb.Permission_Type, key, end []byte) bool {
	set := up.read
	if typ == authpb.Permission_WRITE {
		set = up.write
	}
	if len(end) == 0 {
		return set.coversPoint(key)
	}
	if isOpenEnded(end) {
		end = nil
	}
	return set.covers(interval{begin: key, end: end})
}
