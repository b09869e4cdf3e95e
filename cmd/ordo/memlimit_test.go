package main

import (
	"errors"
	"strings"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	files := map[string]string{
		"/cg/a/b/memory.max":                      "1073741824\n",
		"/cg/unlimited/memory.max":                "max\n",
		"/cg/memory/x/memory.limit_in_bytes":      "536870912\n",
		"/cg/memory/big/memory.limit_in_bytes":    "9223372036854771712\n",
		"/cg/memory/broken/memory.limit_in_bytes": "garbage",
	}
	read := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, errors.New("no such file")
	}
	for _, tc := range []struct {
		cgroup string
		want   int64
	}{
		{"0::/a/b\n", 1 << 30},
		{"0::/unlimited\n", 0},
		{"9:name=systemd:/\n4:memory:/x\n0::/\n", 512 << 20},
		{"4:cpu,memory:/x\n", 512 << 20},
		{"4:memory:/big\n", 0},
		{"4:memory:/broken\n", 0},
		{"4:memory:/missing\n", 0},
		{"", 0},
	} {
		if got := cgroupMemoryLimit(strings.NewReader(tc.cgroup), "/cg", read); got != tc.want {
			t.Errorf("%q: limit %d, want %d", tc.cgroup, got, tc.want)
		}
	}
}
