package logutil

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap"
)

var tsRe = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{4})$`)

func checkLine(t *testing.T, line, level, msg string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("log line is not JSON: %q: %v", line, err)
	}
	if m["level"] != level || m["msg"] != msg {
		t.Errorf("level/msg = %v/%v, want %s/%s", m["level"], m["msg"], level, msg)
	}
	ts, _ := m["ts"].(string)
	if !tsRe.MatchString(ts) {
		t.Errorf("ts %q does not match etcd's layout", ts)
	}
	if c, _ := m["caller"].(string); !strings.Contains(c, "logutil_test.go:") {
		t.Errorf("caller = %q", c)
	}
	return m
}

func TestWriterLoggerShape(t *testing.T) {
	var buf bytes.Buffer
	lg := NewWriterLogger(&buf, "info")
	lg.Debug("hidden")
	lg.Warn("hello", zap.String("k", "v"), zap.Duration("d", 1500000000))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines: %q", len(lines), buf.String())
	}
	m := checkLine(t, lines[0], "warn", "hello")
	if m["k"] != "v" || m["d"] != "1.5s" {
		t.Errorf("fields = %v", m)
	}
	// Key order matches etcd's: level, ts, caller, msg.
	if !strings.HasPrefix(lines[0], `{"level":"warn","ts":"`) || !strings.Contains(lines[0], `","caller":"`) {
		t.Errorf("unexpected key order: %s", lines[0])
	}
}

func TestNewLoggerFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ordo.log")
	lg, err := NewLogger("debug", []string{p})
	if err != nil {
		t.Fatal(err)
	}
	lg.Debug("to file")
	_ = lg.Sync()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	checkLine(t, strings.TrimSpace(string(b)), "debug", "to file")
}

func TestNewLoggerErrors(t *testing.T) {
	for _, tc := range []struct {
		level, format string
		outputs       []string
		want          string
	}{
		{"loud", "json", nil, "unrecognized log level"},
		{"info", "xml", nil, "unknown log format"},
		{"info", "json", []string{"default", "stdout"}, "multi logoutput"},
		{"info", "json", []string{"systemd/journal"}, "not supported"},
		{"info", "json", []string{filepath.Join(t.TempDir(), "missing", "dir", "x.log")}, "building logger"},
	} {
		if _, err := NewLoggerFormat(tc.level, tc.format, tc.outputs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewLoggerFormat(%q, %q, %q) = %v, want %q", tc.level, tc.format, tc.outputs, err, tc.want)
		}
	}
	for _, outs := range [][]string{nil, {"default"}, {"stderr", "stdout"}, {"/dev/null", "stderr"}} {
		if _, err := NewLoggerFormat("info", "console", outs); err != nil {
			t.Errorf("outputs %q: %v", outs, err)
		}
	}
}

func TestMergePaths(t *testing.T) {
	if got := mergePaths([]string{"stdout", "stderr", "stdout"}); strings.Join(got, ",") != "stderr,stdout" {
		t.Errorf("mergePaths = %v", got)
	}
	if got := mergePaths([]string{"stdout", "/dev/null"}); strings.Join(got, ",") != "/dev/null" {
		t.Errorf("mergePaths = %v", got)
	}
}
