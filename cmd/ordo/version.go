package main

import (
	"fmt"
	"io"
	"net/url"
	"runtime"
	"runtime/debug"

	etcdversion "go.etcd.io/etcd/api/v3/version"
)

// version is Ordo's own version; release builds set it with
// -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// gitSHA is the commit Ordo was built from; set with -ldflags "-X main.gitSHA=...". When empty,
// the commit recorded by the Go toolchain is used if there is one.
var gitSHA = ""

// etcdVersion is the etcd release whose API, flags and behaviour Ordo implements.
func etcdVersion() string { return etcdversion.Version }

func gitCommit() string {
	if gitSHA != "" {
		return gitSHA
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				if len(s.Value) > 12 {
					return s.Value[:12]
				}
				return s.Value
			}
		}
	}
	return "Not provided"
}

// printVersion prints the version information, in the shape of "etcd --version".
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "Ordo Version: %s\n", version)
	fmt.Fprintf(w, "etcd Version: %s\n", etcdVersion())
	fmt.Fprintf(w, "API Version: %s\n", etcdversion.APIVersion)
	fmt.Fprintf(w, "Git SHA: %s\n", gitCommit())
	fmt.Fprintf(w, "Go Version: %s\n", runtime.Version())
	fmt.Fprintf(w, "Go OS/Arch: %s/%s\n", runtime.GOOS, runtime.GOARCH)
}

func urlStringers(us []url.URL) []fmt.Stringer {
	out := make([]fmt.Stringer, len(us))
	for i := range us {
		out[i] = &us[i]
	}
	return out
}
