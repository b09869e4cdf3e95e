package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// binder parses a flag's textual value and stores it into its target (usually a Config field).
// String returns the stored value in the canonical textual form that set accepts, so two values
// can be compared as strings (used to tell default from non-default settings).
type binder interface {
	set(s string) error
	String() string
}

// boolBinder is implemented by binders of flags that may be given without a value (-flag).
type boolBinder interface {
	isBool() bool
}

type stringVal struct{ p *string }

func (v stringVal) set(s string) error { *v.p = s; return nil }
func (v stringVal) String() string     { return *v.p }

// choiceVal is a string restricted to a set of values, like etcd's SelectiveStringValue.
type choiceVal struct {
	p       *string
	choices []string
}

func (v choiceVal) set(s string) error {
	if !slices.Contains(v.choices, s) {
		return fmt.Errorf("invalid value %q, valid values: %s", s, strings.Join(v.choices, ", "))
	}
	*v.p = s
	return nil
}
func (v choiceVal) String() string { return *v.p }

type boolVal struct{ p *bool }

func (v boolVal) set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("invalid boolean %q", s)
	}
	*v.p = b
	return nil
}
func (v boolVal) String() string { return strconv.FormatBool(*v.p) }
func (boolVal) isBool() bool     { return true }

type uintVal struct{ p *uint }

func (v uintVal) set(s string) error {
	n, err := strconv.ParseUint(s, 0, strconv.IntSize)
	if err != nil {
		return fmt.Errorf("invalid unsigned integer %q", s)
	}
	*v.p = uint(n)
	return nil
}
func (v uintVal) String() string { return strconv.FormatUint(uint64(*v.p), 10) }

type uint32Val struct{ p *uint32 }

func (v uint32Val) set(s string) error {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return fmt.Errorf("invalid unsigned 32-bit integer %q", s)
	}
	*v.p = uint32(n)
	return nil
}
func (v uint32Val) String() string { return strconv.FormatUint(uint64(*v.p), 10) }

type uint64Val struct{ p *uint64 }

func (v uint64Val) set(s string) error {
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return fmt.Errorf("invalid unsigned integer %q", s)
	}
	*v.p = n
	return nil
}
func (v uint64Val) String() string { return strconv.FormatUint(*v.p, 10) }

type intVal struct{ p *int }

func (v intVal) set(s string) error {
	n, err := strconv.ParseInt(s, 0, strconv.IntSize)
	if err != nil {
		return fmt.Errorf("invalid integer %q", s)
	}
	*v.p = int(n)
	return nil
}
func (v intVal) String() string { return strconv.Itoa(*v.p) }

type int64Val struct{ p *int64 }

func (v int64Val) set(s string) error {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		return fmt.Errorf("invalid integer %q", s)
	}
	*v.p = n
	return nil
}
func (v int64Val) String() string { return strconv.FormatInt(*v.p, 10) }

// durationVal is a Go duration ("100ms", "5s", "2h").
type durationVal struct{ p *time.Duration }

func (v durationVal) set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*v.p = d
	return nil
}
func (v durationVal) String() string { return v.p.String() }

// millisVal is an unsigned number of milliseconds stored as a time.Duration (etcd's
// --heartbeat-interval and --election-timeout).
type millisVal struct{ p *time.Duration }

func (v millisVal) set(s string) error {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return fmt.Errorf("invalid number of milliseconds %q", s)
	}
	*v.p = time.Duration(n) * time.Millisecond
	return nil
}
func (v millisVal) String() string { return strconv.FormatInt(v.p.Milliseconds(), 10) }

// urlsVal is a comma-separated list of URLs, sorted and de-duplicated like etcd's UniqueURLs.
type urlsVal struct{ p *[]url.URL }

func (v urlsVal) set(s string) error {
	if strings.TrimSpace(s) == "" {
		*v.p = nil
		return nil
	}
	us, err := ParseURLs(strings.Split(s, ","))
	if err != nil {
		return err
	}
	*v.p = us
	return nil
}

func (v urlsVal) String() string { return urlsString(*v.p) }

// stringsVal is a comma-separated list of strings. Unique lists are sorted and de-duplicated
// (etcd's UniqueStringsValue); the others keep their order (etcd's StringsValue).
type stringsVal struct {
	p      *[]string
	unique bool
}

func (v stringsVal) set(s string) error {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	if v.unique {
		slices.Sort(out)
		out = slices.Compact(out)
	}
	*v.p = out
	return nil
}
func (v stringsVal) String() string { return strings.Join(*v.p, ",") }

// ignoredVal accepts anything and stores nothing: etcd's long-removed flags, which etcd still
// accepts (with or without a value) and warns about.
type ignoredVal struct{}

func (ignoredVal) set(string) error { return nil }
func (ignoredVal) String() string   { return "" }
func (ignoredVal) isBool() bool     { return true }

// ParseURLs parses URLs with etcd's rules: the scheme must be http, https, unix or unixs; http(s)
// URLs must have the form scheme://host:port with no path; host may be a name or an IP. The result
// is sorted and de-duplicated.
func ParseURLs(strs []string) ([]url.URL, error) {
	if len(strs) == 0 {
		return nil, fmt.Errorf("no valid URLs given")
	}
	out := make([]url.URL, 0, len(strs))
	for _, in := range strs {
		u, err := ParseURL(in)
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b url.URL) int { return strings.Compare(a.String(), b.String()) })
	out = slices.CompactFunc(out, func(a, b url.URL) bool { return a.String() == b.String() })
	return out, nil
}

// ParseURL parses one URL with the rules of ParseURLs.
func ParseURL(in string) (*url.URL, error) {
	in = strings.TrimSpace(in)
	u, err := url.Parse(in)
	if err != nil {
		return nil, fmt.Errorf("parsing URL %q: %w", in, err)
	}
	switch u.Scheme {
	case "http", "https":
		_, port, serr := net.SplitHostPort(u.Host)
		if serr != nil {
			return nil, fmt.Errorf(`URL address does not have the form "host:port": %s`, in)
		}
		if u.Path != "" {
			return nil, fmt.Errorf("URL must not contain a path: %s", in)
		}
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			return nil, fmt.Errorf("URL has an invalid port: %s", in)
		}
	case "unix", "unixs":
		if u.Host == "" && u.Path == "" && u.Opaque == "" {
			return nil, fmt.Errorf("unix socket URL has no path: %s", in)
		}
	default:
		return nil, fmt.Errorf("URL scheme must be http, https, unix, or unixs: %s", in)
	}
	return u, nil
}

func urlsString(us []url.URL) string {
	ss := make([]string, len(us))
	for i := range us {
		ss[i] = us[i].String()
	}
	return strings.Join(ss, ",")
}
