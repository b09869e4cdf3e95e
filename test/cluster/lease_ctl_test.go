package cluster_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestLeaseCtl drives the lease commands of "ordo ctl" (etcdctl) against a 1-member cluster and
// checks etcdctl's output formats.
func TestLeaseCtl(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 1, testcluster.Options{Process: true})
	leader(t, c, 30*time.Second)
	run := ctlRunner(t, c)
	mustRun := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("ordo ctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	match := func(what, out, pattern string) []string {
		t.Helper()
		m := regexp.MustCompile(`\A` + pattern + `\n\z`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: output %q does not match %q", what, out, pattern)
		}
		return m
	}

	// grant: "lease %016x granted with TTL(%ds)"
	id := match("lease grant", mustRun("lease", "grant", "30"), `lease ([0-9a-f]{16}) granted with TTL\(30s\)`)[1]
	id2 := match("lease grant below the minimum", mustRun("lease", "grant", "0"), `lease ([0-9a-f]{16}) granted with TTL\(1s\)`)[1]
	match("revoke of the 1s lease", mustRun("lease", "revoke", id2), `lease `+id2+` revoked`)

	// put --lease
	match("put --lease", mustRun("put", "--lease="+id, "ctl/a", "1"), `OK`)
	match("put --lease", mustRun("put", "--lease="+id, "ctl/b", "2"), `OK`)
	match("get", mustRun("get", "ctl/a"), "ctl/a\n1")
	if out, err := run("put", "--lease=1234abcd", "ctl/c", "3"); err == nil || !strings.Contains(out, "requested lease not found") {
		t.Fatalf("put with an unknown lease: err %v output %q", err, out)
	}

	// timetolive: "lease %016x granted with TTL(%ds), remaining(%ds)[, attached keys([...])]"
	m := match("timetolive", mustRun("lease", "timetolive", id), `lease `+id+` granted with TTL\(30s\), remaining\((\d+)s\)`)
	if m[1] != "30" && m[1] != "29" {
		t.Fatalf("timetolive right after the grant: remaining %ss", m[1])
	}
	match("timetolive --keys", mustRun("lease", "timetolive", "--keys", id), `lease `+id+` granted with TTL\(30s\), remaining\(\d+s\), attached keys\(\[ctl/a ctl/b\]\)`)

	// list: "found %d leases" then one id a line
	match("list", mustRun("lease", "list"), fmt.Sprintf(`found 1 leases\n%s`, id))

	// keep-alive --once: "lease %016x keepalived with TTL(%d)"
	match("keep-alive --once", mustRun("lease", "keep-alive", "--once", id), `lease `+id+` keepalived with TTL\(30\)`)

	// revoke: "lease %016x revoked"; then the keys are gone and the lease "already expired".
	match("revoke", mustRun("lease", "revoke", id), `lease `+id+` revoked`)
	if out := mustRun("get", "ctl/", "--prefix"); out != "" {
		t.Fatalf("keys left after revoke: %q", out)
	}
	match("timetolive after revoke", mustRun("lease", "timetolive", id), `lease `+id+` already expired`)
	match("list after revoke", mustRun("lease", "list"), `found 0 leases`)
	if out, err := run("lease", "revoke", id); err == nil || !strings.Contains(out, "requested lease not found") {
		t.Fatalf("second revoke: err %v output %q", err, out)
	}
	if out, err := run("lease", "keep-alive", "--once", id); err == nil || !strings.Contains(out, "requested lease not found") {
		t.Fatalf("keep-alive --once of a revoked lease: err %v output %q", err, out)
	}
	// keep-alive (streaming) of a revoked lease ends at once: "lease %016x expired or revoked."
	match("keep-alive of a revoked lease", mustRun("lease", "keep-alive", id), `lease `+id+` expired or revoked\.`)
}
