package config

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// stubResolver makes Load resolve host names without the network: "localhost" is 127.0.0.1,
// every other name is unknown.
func stubResolver(f *testing.F) {
	old := lookupHost
	f.Cleanup(func() { lookupHost = old })
	lookupHost = func(_ context.Context, host string) ([]string, error) {
		if host == "localhost" {
			return []string{"127.0.0.1"}, nil
		}
		return nil, errors.New("no such host")
	}
}

// fuzzSpecs lists the flags the fuzz targets set: every flag but --config-file (the targets
// choose the file themselves, so no fuzzed path is ever read) and --version.
func fuzzSpecs(f *testing.F) []*flagSpec {
	tbl, err := newFlagTable(&Config{}, new(string), new(bool))
	if err != nil {
		f.Fatalf("flag table: %v", err)
	}
	var out []*flagSpec
	for _, s := range tbl.specs {
		if s.name != "config-file" && s.name != "version" {
			out = append(out, s)
		}
	}
	return out
}

// specIndex returns the index of the flag name in specs, for seeds.
func specIndex(f *testing.F, specs []*flagSpec, name string) uint16 {
	for i, s := range specs {
		if s.name == name {
			return uint16(i)
		}
	}
	f.Fatalf("no flag %q", name)
	return 0
}

// Ways a fuzz target hands a setting to Load.
const (
	viaFlag = iota
	viaEnv
	viaFile
	viaCount
)

// loadOne runs Load with one setting given one way, with a fresh data dir, and returns the
// settings' names as the error message may spell them.
func loadOne(t *testing.T, s *flagSpec, value string, via int) (cfg *Config, names []string, err error) {
	dir := t.TempDir()
	args := []string{"--data-dir=" + filepath.Join(dir, "data")}
	var env []string
	names = []string{s.name, strings.ReplaceAll(s.name, "-", " ")}
	switch via {
	case viaFlag:
		args = append(args, "--"+s.name+"="+value)
	case viaEnv:
		env = append(env, flagToEnv(s.name)+"="+value)
		names = append(names, flagToEnv(s.name))
	case viaFile:
		key := s.yamlKey()
		if key == "" || !utf8.ValidString(value) {
			// A YAML string is Unicode: invalid UTF-8 cannot be written into the file.
			return nil, nil, errSkip
		}
		path := filepath.Join(dir, "ordo.yaml")
		doc := "data-dir: " + strconv.Quote(filepath.Join(dir, "data")) + "\n" + yamlEntry(key, value)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatalf("write config file: %v", err)
		}
		args = []string{"--config-file=" + path}
		names = append(names, key, path)
	}
	cfg, err = Load(args, env, nil)
	return cfg, names, err
}

var errSkip = errors.New("skip")

// yamlEntry writes key: value, nesting dotted keys the way etcd's file does.
func yamlEntry(key, value string) string {
	parts := strings.Split(key, ".")
	var b strings.Builder
	for i, p := range parts {
		b.WriteString(strings.Repeat("  ", i))
		b.WriteString(p)
		b.WriteString(":")
		if i < len(parts)-1 {
			b.WriteString("\n")
		}
	}
	b.WriteString(" ")
	b.WriteString(strconv.Quote(value))
	b.WriteString("\n")
	return b.String()
}

// checkConfig checks what every configuration Load accepts satisfies.
func checkConfig(t *testing.T, cfg *Config) {
	t.Helper()
	switch {
	case cfg.DataDir == "":
		t.Fatalf("accepted config has no data dir")
	case len(cfg.ListenClientURLs) == 0 || len(cfg.ListenPeerURLs) == 0 || len(cfg.InitialAdvertisePeerURLs) == 0:
		t.Fatalf("accepted config lacks listen/advertise URLs: %+v", cfg)
	case cfg.HeartbeatInterval <= 0 || cfg.ElectionTimeout < 5*cfg.HeartbeatInterval:
		t.Fatalf("accepted config has heartbeat %v, election timeout %v", cfg.HeartbeatInterval, cfg.ElectionTimeout)
	case cfg.SnapshotCount == 0 || cfg.SnapshotCatchUpEntries == 0:
		t.Fatalf("accepted config has snapshot count %d, catch-up %d", cfg.SnapshotCount, cfg.SnapshotCatchUpEntries)
	case cfg.InitialClusterState != ClusterStateNew && cfg.InitialClusterState != ClusterStateExisting:
		t.Fatalf("accepted config has initial cluster state %q", cfg.InitialClusterState)
	case cfg.BcryptCost < minBcryptCost || cfg.BcryptCost > maxBcryptCost:
		t.Fatalf("accepted config has bcrypt cost %d", cfg.BcryptCost)
	}
	if hasData, err := dirHasData(cfg.DataDir); err == nil && !hasData {
		if _, ok := cfg.InitialClusterMap[cfg.Name]; !ok {
			t.Fatalf("accepted config: member %q not in initial cluster %v", cfg.Name, cfg.InitialClusterMap)
		}
	}
}

// FuzzLoadSetting sets one flag to a fuzzed value, on the command line, through its ETCD_*
// variable or in a configuration file. Load never panics, returns a configuration or an error,
// every configuration it accepts is valid, and an error names the setting (flag, variable or
// file key) or quotes the offending value.
func FuzzLoadSetting(f *testing.F) {
	stubResolver(f)
	specs := fuzzSpecs(f)
	for _, c := range []struct{ name, value string }{
		{"name", "m1"}, {"name", ""}, {"listen-client-urls", "http://127.0.0.1:0"}, {"listen-client-urls", "http://localhost:2379"},
		{"listen-peer-urls", "unix:///tmp/x"}, {"initial-cluster", "default=http://localhost:2380"}, {"initial-cluster", "a=b=c"},
		{"initial-cluster", ""}, {"initial-cluster-state", "existing"}, {"initial-cluster-state", "bogus"},
		{"heartbeat-interval", "1000"}, {"election-timeout", "-1"}, {"snapshot-count", "0"}, {"max-txn-ops", "x"},
		{"auto-compaction-mode", "revision"}, {"auto-compaction-retention", "1h"}, {"log-level", "loud"},
		{"logger", "capnslog"}, {"log-outputs", "stdout,default"}, {"cert-file", "/x.pem"}, {"enable-pprof", "true"},
		{"quota-backend-bytes", "1e3"}, {"advertise-client-urls", "http://[::1]:2379"}, {"tls-min-version", "TLS1.3"},
		{"discovery-fallback", "proxy"}, {"client-cert-auth", "maybe"}, {"bcrypt-cost", "99"},
	} {
		for via := range viaCount {
			f.Add(specIndex(f, specs, c.name), c.value, uint8(via))
		}
	}
	f.Fuzz(func(t *testing.T, idx uint16, value string, via uint8) {
		if strings.ContainsAny(value, "\x00\n\r") {
			return // cannot be passed as an argument or environment variable
		}
		s := specs[int(idx)%len(specs)]
		cfg, names, err := loadOne(t, s, value, int(via%viaCount))
		if errors.Is(err, errSkip) {
			return
		}
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Load with --%s=%q returned config %v and error %v", s.name, value, cfg != nil, err)
		}
		if err == nil {
			checkConfig(t, cfg)
			return
		}
		if errors.Is(err, flag.ErrHelp) || errors.Is(err, ErrVersion) {
			t.Fatalf("Load with --%s=%q = %v", s.name, value, err)
		}
		msg := err.Error()
		quoted := strconv.Quote(value)
		if strings.Contains(msg, quoted) || (len(value) > 0 && (strings.Contains(msg, value) || strings.Contains(msg, quoted[1:len(quoted)-1]))) {
			return
		}
		lower := strings.ToLower(msg)
		for _, n := range names {
			if strings.Contains(lower, strings.ToLower(n)) {
				return
			}
		}
		t.Fatalf("Load with --%s=%q (way %d) failed with %q, which names neither the setting nor the value", s.name, value, via%viaCount, msg)
	})
}

// FuzzLoad runs Load on a fuzzed command line (split at spaces), fuzzed ETCD_* variables (one
// per line) and, when the command line asks for it, a fuzzed configuration file. Load never
// panics, returns a configuration or an error, is deterministic, and every configuration it
// accepts is valid.
func FuzzLoad(f *testing.F) {
	stubResolver(f)
	f.Add("--name m1 --initial-cluster m1=http://127.0.0.1:2380", "", "", false)
	f.Add("--listen-client-urls=http://127.0.0.1:0", "ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:0", "", false)
	f.Add("", "ETCD_NAME=x\nETCD_INITIAL_CLUSTER=x=http://localhost:2380\nETCD_UNKNOWN=1", "", false)
	f.Add("--name a", "ETCD_NAME=b", "", false)
	f.Add("--heartbeat-interval 10 --election-timeout 40", "ETCD_VERSION=1", "", false)
	f.Add("-h", "", "", false)
	f.Add("--version", "", "", false)
	f.Add("stray", "", "", false)
	f.Add("--force --snapshot", "", "", false)
	f.Add("", "", "name: m1\ninitial-cluster: m1=http://localhost:2380\nheartbeat-interval: 100000000\n", true)
	f.Add("", "", "client-transport-security:\n  cert-file: /x\nlog-outputs: [stderr]\n", true)
	f.Add("", "", "election-timeout: 1.5\nsnapshot-count: -3\n", true)
	f.Add("", "", "socket-options: 3\n", true)
	f.Add("", "", "initial-cluster-state: \"\"\nmax-txn-ops: [1, 2]\n", true)
	f.Add("", "", ":\n- [", true)
	f.Fuzz(func(t *testing.T, argLine, envBlob, yamlDoc string, useFile bool) {
		dir := t.TempDir()
		args := []string{"--data-dir=" + filepath.Join(dir, "data")}
		for _, a := range strings.Fields(argLine) {
			if strings.Contains(strings.ToLower(a), "config") {
				continue // no fuzzed file path is ever read
			}
			args = append(args, a)
		}
		var env []string
		for _, kv := range strings.Split(envBlob, "\n") {
			if kv == "" || strings.Contains(strings.ToUpper(kv), "CONFIG") {
				continue
			}
			env = append(env, kv)
		}
		if useFile {
			path := filepath.Join(dir, "ordo.yaml")
			if err := os.WriteFile(path, []byte(yamlDoc), 0o600); err != nil {
				t.Fatalf("write config file: %v", err)
			}
			args = append(args, "--config-file="+path)
		}
		cfg, err := Load(args, env, nil)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Load(%q, %q) returned config %v and error %v", args, env, cfg != nil, err)
		}
		cfg2, err2 := Load(args, env, nil)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("Load(%q, %q) is not deterministic: %v, then %v", args, env, err, err2)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("Load(%q, %q) failed with an empty message", args, env)
			}
			return
		}
		if cfg.DataDir != cfg2.DataDir || cfg.Name != cfg2.Name {
			t.Fatalf("Load(%q, %q) is not deterministic", args, env)
		}
		checkConfig(t, cfg)
	})
}
