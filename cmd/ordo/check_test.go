package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ordo-db/ordo/internal/testcluster"
)

// `ordo check` against a healthy member passes and prints its figures.
func TestCheckCommand(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Quiet: true})
	var out, errOut bytes.Buffer
	code := checkMain([]string{"--endpoints", c.Members[0].ClientURL, "--duration", "1s", "--clients", "4", "--watchers", "2", "--exclusive"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"linearizability: Ok", "lost writes: 0", "violations: 0", "result: PASS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// Bad usage exits 2 with a message.
func TestCheckCommandUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := checkMain([]string{"--no-such-flag"}, &out, &errOut); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if code := checkMain([]string{"stray"}, &out, &errOut); code != exitUsage || !strings.Contains(errOut.String(), "unexpected argument") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}
