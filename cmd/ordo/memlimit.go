package main

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// memoryLimitShare is the part of a cgroup memory limit given to Go's soft memory limit; the
// rest is headroom for memory the Go runtime does not manage (Pebble's cache is allocated
// outside the Go heap) and for the collector to act before the kernel does.
const memoryLimitShare = 0.8

// applyCgroupMemoryLimit sets Go's soft memory limit from the member's cgroup memory limit,
// unless GOMEMLIMIT is set, so that under a container's limit the collector works harder
// instead of the process being killed. It returns the limit set (0: none).
func applyCgroupMemoryLimit(lg *zap.Logger) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	defer f.Close()
	limit := cgroupMemoryLimit(f, "/sys/fs/cgroup", func(p string) ([]byte, error) { return os.ReadFile(p) })
	if limit <= 0 {
		return 0
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	lg.Info("set Go memory limit from the cgroup memory limit",
		zap.Int64("cgroup-limit-bytes", limit), zap.Int64("go-memory-limit-bytes", soft))
	return soft
}

// cgroupMemoryLimit reads the memory limit of the cgroup that /proc/self/cgroup (cg) names,
// under the cgroup filesystem root, for cgroup v2 ("0::/path" → memory.max) and v1
// ("N:memory:/path" → memory.limit_in_bytes). It returns 0 when there is no limit or it
// cannot be read.
func cgroupMemoryLimit(cg io.Reader, root string, read func(string) ([]byte, error)) int64 {
	var candidates []string
	sc := bufio.NewScanner(cg)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			candidates = append(candidates, filepath.Join(root, parts[2], "memory.max"))
		case containsField(parts[1], "memory"):
			candidates = append(candidates, filepath.Join(root, "memory", parts[2], "memory.limit_in_bytes"))
		}
	}
	for _, p := range candidates {
		b, err := read(p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		v, err := strconv.ParseInt(s, 10, 64)
		// cgroup v1 reports "no limit" as a number near the largest int64.
		if err != nil || v <= 0 || v >= 1<<60 {
			continue
		}
		return v
	}
	return 0
}

func containsField(list, name string) bool {
	for _, f := range strings.Split(list, ",") {
		if f == name {
			return true
		}
	}
	return false
}
