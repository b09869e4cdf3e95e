package main

import (
	"bytes"
	"strings"
	"testing"
)

// These tests stop before the server starts, so they open no ports.
func TestRunWithoutServer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		wantStdout []string
		wantStderr []string
	}{
		{name: "version", args: []string{"--version"}, code: exitOK,
			wantStdout: []string{"Ordo Version: " + version, "etcd Version: 3.7.", "API Version: 3.7", "Go Version: go", "Go OS/Arch: "}},
		{name: "help", args: []string{"--help"}, code: exitOK,
			wantStdout: []string{"ordo ctl", "Member:", "--initial-cluster 'default=http://localhost:2380'"}},
		{name: "unknown flag", args: []string{"--bogus"}, code: exitUsage,
			wantStderr: []string{"flag provided but not defined: -bogus", "ordo --help"}},
		{name: "reserved subcommand", args: []string{"snapshot"}, code: exitUsage,
			wantStderr: []string{"not implemented yet"}},
		{name: "invalid config", args: []string{"--wal-dir=/tmp/wal"}, code: exitError,
			wantStderr: []string{"failed to verify flags", "--wal-dir"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"ordo"}, tc.args...), nil, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code = %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			for _, w := range tc.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tc.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}
