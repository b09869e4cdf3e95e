package cluster_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// TestMaintenanceCtl drives "ordo ctl" (etcdctl) move-leader and defrag against a 3-member
// cluster of member processes, as an operator rolling members would.
func TestMaintenanceCtl(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 3, testcluster.Options{Process: true})
	lead := leader(t, c, 30*time.Second)
	ctl := ctlRunner(t, c)
	run := func(args ...string) string {
		t.Helper()
		out, err := ctl(args...)
		if err != nil {
			t.Fatalf("ordo ctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	target := (lead + 1) % len(c.Members)
	out := run("move-leader", fmt.Sprintf("%x", c.MemberID(target)))
	want := fmt.Sprintf("Leadership transferred from %x to %x\n", c.MemberID(lead), c.MemberID(target))
	if out != want {
		t.Fatalf("move-leader: output %q, want %q", out, want)
	}
	if now := leader(t, c, 10*time.Second); now != target {
		t.Fatalf("after move-leader the leader is %s, want %s", c.Members[now].Name, c.Members[target].Name)
	}

	out = run("defrag")
	for _, m := range c.Members {
		ep := m.ClientURL
		if !regexp.MustCompile(`(?m)^Finished defragmenting etcd member\[` + regexp.QuoteMeta(ep) + `\]\. took `).MatchString(out) {
			t.Fatalf("defrag: no success line for %s in %q", ep, out)
		}
	}
	if out := run("put", "after/defrag", "1"); out != "OK\n" {
		t.Fatalf("put after defrag: %q", out)
	}
}
