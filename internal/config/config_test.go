package config

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// etcdFlags is every flag etcd v3.7.3's server registers (server/embed/config.go AddFlags and
// server/etcdmain/config.go, including the legacy flags etcd ignores).
var etcdFlags = []string{
	"advertise-client-urls", "auth-token", "auth-token-ttl", "auto-compaction-mode", "auto-compaction-retention",
	"auto-tls", "backend-batch-interval", "backend-batch-limit", "backend-bbolt-freelist-type", "bcrypt-cost",
	"bootstrap-defrag-threshold-megabytes", "cert-file", "cipher-suites", "client-cert-allowed-hostname",
	"client-cert-auth", "client-cert-file", "client-crl-file", "client-key-file", "compact-hash-check-time",
	"compaction-batch-limit", "compaction-sleep-interval", "config-file", "corrupt-check-time", "cors", "data-dir",
	"discovery-cacert", "discovery-cert", "discovery-dial-timeout", "discovery-endpoints", "discovery-fallback",
	"discovery-insecure-skip-tls-verify", "discovery-insecure-transport", "discovery-keepalive-time",
	"discovery-keepalive-timeout", "discovery-key", "discovery-password", "discovery-request-timeout",
	"discovery-srv", "discovery-srv-name", "discovery-token", "discovery-user", "distributed-tracing-address",
	"distributed-tracing-instance-id", "distributed-tracing-sampling-rate", "distributed-tracing-service-name",
	"downgrade-check-time", "election-timeout", "enable-distributed-tracing", "enable-grpc-gateway",
	"enable-log-rotation", "enable-pprof", "feature-gates", "force-new-cluster", "grpc-keepalive-interval",
	"grpc-keepalive-min-time", "grpc-keepalive-timeout", "heartbeat-interval", "host-whitelist",
	"initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "initial-cluster-token",
	"initial-election-tick-advance", "key-file", "listen-client-http-urls", "listen-client-urls",
	"listen-metrics-urls", "listen-peer-urls", "log-format", "log-level", "log-outputs", "log-rotation-config-json",
	"logger", "max-concurrent-streams", "max-learners", "max-request-bytes", "max-snapshots", "max-txn-ops",
	"max-wals", "memory-mlock", "metrics", "name", "peer-auto-tls", "peer-cert-allowed-cn",
	"peer-cert-allowed-hostname", "peer-cert-file", "peer-client-cert-auth", "peer-client-cert-file",
	"peer-client-key-file", "peer-crl-file", "peer-key-file", "peer-skip-client-san-verification",
	"peer-trusted-ca-file", "pre-vote", "quota-backend-bytes", "raft-read-timeout", "raft-write-timeout",
	"self-signed-cert-validity", "snapshot-catchup-entries", "snapshot-count", "socket-reuse-address",
	"socket-reuse-port", "strict-reconfig-check", "tls-max-version", "tls-min-version", "trusted-ca-file",
	"unsafe-no-fsync", "v2-deprecation", "version", "wal-dir", "warning-apply-duration",
	"warning-unary-request-duration", "watch-progress-notify-interval",
	// Ignored by etcd.
	"cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
	"max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval", "peer-election-timeout",
	"retry-interval", "snapshot", "v", "vv", "test.coverprofile", "test.outputdir",
}

// load runs Load with a fresh data dir unless args set one, and returns what it wrote to stderr.
func load(t *testing.T, args, env []string) (*Config, string, error) {
	t.Helper()
	hasDir := false
	for _, a := range args {
		if strings.Contains(a, "data-dir") || strings.Contains(a, "config-file") {
			hasDir = true
		}
	}
	for _, e := range env {
		if strings.HasPrefix(e, "ETCD_DATA_DIR=") || strings.HasPrefix(e, "ETCD_CONFIG_FILE=") {
			hasDir = true
		}
	}
	if !hasDir {
		args = append([]string{"--data-dir", filepath.Join(t.TempDir(), "data")}, args...)
	}
	var buf bytes.Buffer
	cfg, err := Load(args, env, &buf)
	return cfg, buf.String(), err
}

func mustURLs(t *testing.T, ss ...string) []url.URL {
	t.Helper()
	us, err := ParseURLs(ss)
	if err != nil {
		t.Fatalf("ParseURLs(%q): %v", ss, err)
	}
	return us
}

// ordoFlags are Ordo's own flags, beyond etcd's.
var ordoFlags = []string{"watch-buffer-bytes", "skip-startup-verify", "disk-reserve-bytes"}

func TestFlagTableCoversEtcd(t *testing.T) {
	tbl, err := newFlagTable(&Config{}, new(string), new(bool))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range etcdFlags {
		if tbl.byName[name] == nil {
			t.Errorf("etcd flag --%s is missing from the flag table", name)
		}
	}
	yamlKeys := map[string]string{}
	for _, s := range tbl.specs {
		if !slices.Contains(etcdFlags, s.name) && !slices.Contains(ordoFlags, s.name) {
			t.Errorf("flag --%s is not an etcd v3.7 flag", s.name)
		}
		if (s.handling == noop || s.handling == unsupported) && s.why == "" {
			t.Errorf("flag --%s: no-op/unsupported flag without a reason", s.name)
		}
		if s.handling != legacy && s.usage == "" {
			t.Errorf("flag --%s has no usage text", s.name)
		}
		if s.group != gLegacy && !slices.Contains(helpGroups, s.group) {
			t.Errorf("flag --%s has unknown help group %q", s.name, s.group)
		}
		if k := s.yamlKey(); k != "" {
			if other, dup := yamlKeys[k]; dup {
				t.Errorf("config file key %q used by --%s and --%s", k, other, s.name)
			}
			yamlKeys[k] = s.name
		}
	}
}

func TestEveryFlagAcceptedWithDefault(t *testing.T) {
	// Giving any flag its own default value must be accepted (unsupported flags included).
	tbl, err := newFlagTable(&Config{}, new(string), new(bool))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range tbl.specs {
		if s.name == "version" || s.name == "config-file" || s.name == "data-dir" {
			continue
		}
		arg := "--" + s.name + "=" + s.def
		if s.handling == legacy {
			arg = "--" + s.name
		}
		t.Run(s.name, func(t *testing.T) {
			args := []string{arg}
			if s.name == "listen-client-urls" {
				args = append(args, "--advertise-client-urls", DefaultListenClientURL)
			}
			if _, out, err := load(t, args, nil); err != nil {
				t.Fatalf("Load(%q): %v\n%s", args, err, out)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	var buf bytes.Buffer
	cfg, err := Load(nil, nil, &buf)
	out := buf.String()
	if err != nil {
		t.Fatalf("Load: %v (%s)", err, out)
	}
	want := &Config{
		Name:                        "default",
		DataDir:                     "default.ordo",
		ListenClientURLs:            mustURLs(t, "http://localhost:2379"),
		AdvertiseClientURLs:         mustURLs(t, "http://localhost:2379"),
		ListenPeerURLs:              mustURLs(t, "http://localhost:2380"),
		InitialAdvertisePeerURLs:    mustURLs(t, "http://localhost:2380"),
		InitialCluster:              "default=http://localhost:2380",
		InitialClusterMap:           map[string][]url.URL{"default": mustURLs(t, "http://localhost:2380")},
		InitialClusterState:         "new",
		InitialClusterToken:         "etcd-cluster",
		StrictReconfigCheck:         true,
		PreVote:                     true,
		MaxLearners:                 1,
		SnapshotCount:               10000,
		SnapshotCatchUpEntries:      5000,
		HeartbeatInterval:           100 * time.Millisecond,
		ElectionTimeout:             time.Second,
		InitialElectionTickAdvance:  true,
		MaxRequestBytes:             1572864,
		MaxTxnOps:                   128,
		MaxConcurrentStreams:        math.MaxUint32,
		GRPCKeepAliveMinTime:        5 * time.Second,
		GRPCKeepAliveInterval:       2 * time.Hour,
		GRPCKeepAliveTimeout:        20 * time.Second,
		EnableGRPCGateway:           true,
		AutoCompactionMode:          "periodic",
		AutoCompactionRetention:     "0",
		WatchProgressNotifyInterval: 10 * time.Minute,
		WatchBufferBytes:            64 << 20,
		DiskReserveBytes:            320 << 20,
		Metrics:                     "basic",
		AuthToken:                   "simple",
		BcryptCost:                  10,
		AuthTokenTTL:                300,
		Logger:                      "zap",
		LogLevel:                    "info",
		LogFormat:                   "json",
		LogOutputs:                  []string{"default"},
		WarningApplyDuration:        100 * time.Millisecond,
		WarningUnaryRequestDuration: 300 * time.Millisecond,
		TLSMinVersion:               "TLS1.2",
		SelfSignedCertValidity:      1,
		FeatureGates:                map[string]bool{},
		ExplicitlySet:               map[string]bool{},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", cfg, want)
	}
	if cfg.BackendQuota() != 2<<30 {
		t.Errorf("BackendQuota() = %d, want 2 GiB", cfg.BackendQuota())
	}
	if cfg.ElectionTicks() != 10 {
		t.Errorf("ElectionTicks() = %d, want 10", cfg.ElectionTicks())
	}
	if !strings.Contains(out, "it isn't recommended to use default name") {
		t.Errorf("expected default-name warning, got %s", out)
	}
}

func TestFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "infra1")
	args := []string{
		"--name", "infra1",
		"-data-dir=" + dir,
		"--listen-client-urls", "http://127.0.0.1:2379",
		"--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:12380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:12380",
		"--initial-cluster-token", "etcd-cluster-1",
		"--initial-cluster", "infra1=http://127.0.0.1:12380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380",
		"--initial-cluster-state", "new",
		"--heartbeat-interval", "50",
		"--election-timeout=500",
		"--snapshot-count", "42",
		"--snapshot-catchup-entries", "7",
		"--max-request-bytes", "1024",
		"--max-txn-ops", "16",
		"--quota-backend-bytes", "-1",
		"--auto-compaction-mode", "revision",
		"--auto-compaction-retention", "1000",
		"--log-level", "debug",
		"--log-outputs", "stdout,stderr",
		"--strict-reconfig-check=false",
		"--force-new-cluster",
		"--pre-vote=false",
		"--watch-progress-notify-interval", "5s",
		"--listen-metrics-urls", "http://127.0.0.1:2381,http://localhost:2382",
		"--metrics", "extensive",
	}
	cfg, out, err := load(t, args, nil)
	if err != nil {
		t.Fatalf("Load: %v\n%s", err, out)
	}
	checks := []struct {
		name     string
		got, exp any
	}{
		{"Name", cfg.Name, "infra1"},
		{"DataDir", cfg.DataDir, dir},
		{"ListenClientURLs", cfg.ListenClientURLs, mustURLs(t, "http://127.0.0.1:2379")},
		{"ListenPeerURLs", cfg.ListenPeerURLs, mustURLs(t, "http://127.0.0.1:12380")},
		{"ListenMetricsURLs", cfg.ListenMetricsURLs, mustURLs(t, "http://127.0.0.1:2381", "http://localhost:2382")},
		{"Metrics", cfg.Metrics, "extensive"},
		{"InitialClusterToken", cfg.InitialClusterToken, "etcd-cluster-1"},
		{"InitialClusterMap", len(cfg.InitialClusterMap), 3},
		{"infra2", cfg.InitialClusterMap["infra2"], mustURLs(t, "http://127.0.0.1:22380")},
		{"HeartbeatInterval", cfg.HeartbeatInterval, 50 * time.Millisecond},
		{"ElectionTimeout", cfg.ElectionTimeout, 500 * time.Millisecond},
		{"SnapshotCount", cfg.SnapshotCount, uint64(42)},
		{"SnapshotCatchUpEntries", cfg.SnapshotCatchUpEntries, uint64(7)},
		{"MaxRequestBytes", cfg.MaxRequestBytes, uint(1024)},
		{"MaxTxnOps", cfg.MaxTxnOps, uint(16)},
		{"QuotaBackendBytes", cfg.QuotaBackendBytes, int64(-1)},
		{"BackendQuota", cfg.BackendQuota(), int64(-1)},
		{"AutoCompactionMode", cfg.AutoCompactionMode, "revision"},
		{"LogLevel", cfg.LogLevel, "debug"},
		{"LogOutputs", cfg.LogOutputs, []string{"stderr", "stdout"}},
		{"StrictReconfigCheck", cfg.StrictReconfigCheck, false},
		{"ForceNewCluster", cfg.ForceNewCluster, true},
		{"PreVote", cfg.PreVote, false},
		{"WatchProgressNotifyInterval", cfg.WatchProgressNotifyInterval, 5 * time.Second},
		{"ExplicitlySet[name]", cfg.ExplicitlySet["name"], true},
		{"ExplicitlySet[wal-dir]", cfg.ExplicitlySet["wal-dir"], false},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.exp) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.exp)
		}
	}
	if n, err := cfg.AutoCompactionRevisions(); err != nil || n != 1000 {
		t.Errorf("AutoCompactionRevisions() = %d, %v; want 1000", n, err)
	}
}

func TestNameDefaultsInitialCluster(t *testing.T) {
	cfg, out, err := load(t, []string{"--name", "x"}, nil)
	if err != nil {
		t.Fatalf("Load: %v\n%s", err, out)
	}
	if cfg.InitialCluster != "x=http://localhost:2380" {
		t.Errorf("InitialCluster = %q", cfg.InitialCluster)
	}
	if !strings.HasSuffix(cfg.DataDir, "data") {
		t.Errorf("DataDir = %q", cfg.DataDir)
	}

	t.Chdir(t.TempDir())
	cfg, err = Load([]string{"--name", "x"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "x.ordo" {
		t.Errorf("default DataDir = %q, want x.ordo", cfg.DataDir)
	}
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     []string
		check   func(*Config) string
		wantErr string
		wantOut []string
	}{
		{
			name: "env sets flags",
			env:  []string{"ETCD_NAME=envname", "ETCD_SNAPSHOT_COUNT=5", "ETCD_LOG_OUTPUTS=stdout", "ETCD_INITIAL_CLUSTER_STATE=existing", "ETCD_INITIAL_CLUSTER=envname=http://localhost:2380"},
			check: func(c *Config) string {
				if c.Name != "envname" || c.SnapshotCount != 5 || !slices.Equal(c.LogOutputs, []string{"stdout"}) || c.InitialClusterState != "existing" {
					return "env not applied"
				}
				if !c.ExplicitlySet["name"] {
					return "name not marked explicitly set"
				}
				return ""
			},
			wantOut: []string{"recognized and used environment variable", "ETCD_NAME"},
		},
		{
			name: "flag and env for different flags",
			args: []string{"--name", "flagname"},
			env:  []string{"ETCD_SNAPSHOT_COUNT=5"},
			check: func(c *Config) string {
				if c.Name != "flagname" || c.SnapshotCount != 5 {
					return "flag and env not both applied"
				}
				return ""
			},
		},
		{
			name:    "flag and env for the same flag conflict",
			args:    []string{"--name", "flagname"},
			env:     []string{"ETCD_NAME=envname"},
			wantErr: `conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag --name`,
		},
		{
			name:    "unknown ETCD_ variable warns",
			env:     []string{"ETCD_BOGUS=1", "ETCDCTL_API=3", "HOME=/root"},
			wantOut: []string{"unrecognized environment variable", "ETCD_BOGUS=1"},
		},
		{
			name:    "ETCD_VERSION is special",
			env:     []string{"ETCD_VERSION=1"},
			wantOut: []string{"cannot set special environment variable"},
		},
		{
			name: "empty env value ignored",
			env:  []string{"ETCD_NAME="},
			check: func(c *Config) string {
				return unless(c.Name == "default", "empty ETCD_NAME applied")
			},
		},
		{
			name:    "bad env value",
			env:     []string{"ETCD_SNAPSHOT_COUNT=lots"},
			wantErr: `invalid value "lots" for ETCD_SNAPSHOT_COUNT`,
		},
		{
			name:    "env listen-client-urls without advertise",
			env:     []string{"ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:2379"},
			wantErr: ErrUnsetAdvertiseClientURLs.Error(),
		},
		{
			name:    "env unsupported flag",
			env:     []string{"ETCD_UNSAFE_NO_FSYNC=true"},
			wantErr: "--unsafe-no-fsync",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, out, err := load(t, tc.args, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v\n%s", err, out)
			}
			if tc.check != nil {
				if msg := tc.check(cfg); msg != "" {
					t.Error(msg)
				}
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stderr lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "ETCDCTL_API") {
				t.Errorf("ETCDCTL_ variable reported:\n%s", out)
			}
		})
	}
}

// unless returns msg when ok is false: a one-line check for the table-driven tests.
func unless(ok bool, msg string) string {
	if ok {
		return ""
	}
	return msg
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ordo.conf.yml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFile(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	good := `
name: infra2
data-dir: ` + dataDir + `
listen-client-urls: http://127.0.0.1:22379, unix://localhost:22379
advertise-client-urls: http://127.0.0.1:22379
listen-peer-urls: http://127.0.0.1:22380
initial-advertise-peer-urls: http://127.0.0.1:22380
initial-cluster: infra1=http://127.0.0.1:12380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380
initial-cluster-state: ""
initial-cluster-token: tok
heartbeat-interval: 200
election-timeout: 2000
snapshot-count: 500
max-request-bytes: 2097152
quota-backend-bytes: 8589934592
auto-compaction-mode: periodic
auto-compaction-retention: "30m"
log-level: warn
logger: zap
log-outputs: [stderr]
force-new-cluster: false
strict-reconfig-check: false
grpc-keepalive-interval: 60000000000
Pre-Vote: false
some-unknown-key: 1
enable-v2: true
client-transport-security:
  cert-file: ""
  client-cert-auth: false
`
	tests := []struct {
		name    string
		body    string
		args    []string
		env     []string
		viaEnv  bool
		check   func(*Config) string
		wantErr string
	}{
		{
			name: "full file; flags and env ignored",
			body: good,
			args: []string{"--name", "ignored", "--snapshot-count", "1"},
			env:  []string{"ETCD_MAX_TXN_OPS=1", "ETCD_BOGUS=1"},
			check: func(c *Config) string {
				switch {
				case c.Name != "infra2", c.DataDir != dataDir, c.InitialClusterToken != "tok":
					return "basic keys not applied"
				case len(c.ListenClientURLs) != 2 || c.ListenClientURLs[1].Scheme != "unix":
					return "listen-client-urls not applied"
				case c.InitialClusterState != "new":
					return "empty initial-cluster-state must mean new"
				case c.HeartbeatInterval != 200*time.Millisecond || c.ElectionTimeout != 2*time.Second:
					return "timings not applied"
				case c.SnapshotCount != 500 || c.MaxRequestBytes != 2<<20 || c.QuotaBackendBytes != 8<<30:
					return "sizes not applied"
				case c.LogLevel != "warn" || !slices.Equal(c.LogOutputs, []string{"stderr"}):
					return "logging not applied"
				case c.StrictReconfigCheck || c.PreVote:
					return "bools not applied"
				case c.GRPCKeepAliveInterval != time.Minute:
					return "nanosecond duration not applied"
				case c.MaxTxnOps != DefaultMaxTxnOps:
					return "environment must be ignored with a config file"
				case !c.ExplicitlySet["name"] || c.ExplicitlySet["max-txn-ops"]:
					return "ExplicitlySet wrong"
				}
				if d, err := c.AutoCompactionPeriod(); err != nil || d != 30*time.Minute {
					return "auto-compaction-retention not applied"
				}
				return ""
			},
		},
		{
			name:   "ETCD_CONFIG_FILE",
			body:   good,
			viaEnv: true,
			check:  func(c *Config) string { return unless(c.Name == "infra2", "file not read") },
		},
		{
			name: "listen-client-urls alone keeps default advertise in file mode",
			body: "data-dir: " + dataDir + "\nlisten-client-urls: http://127.0.0.1:3379\n",
			check: func(c *Config) string {
				return unless(len(c.AdvertiseClientURLs) == 1, "advertise lost")
			},
		},
		{
			name:  "empty file gives defaults",
			body:  "",
			args:  []string{"--data-dir", dataDir},
			check: func(c *Config) string { return unless(c.Name == "default", "not defaults") },
		},
		{name: "TLS in file", body: "client-transport-security:\n  cert-file: /a.pem\n", wantErr: "--cert-file"},
		{name: "peer TLS in file", body: "peer-transport-security:\n  auto-tls: true\n", wantErr: "--peer-auto-tls"},
		{name: "discovery in file", body: "discovery-config:\n  client:\n    endpoints: [http://1.2.3.4:2379]\n  token: t\n", wantErr: `(config file key "discovery-config.token") is not supported`},
		{name: "wal-dir in file", body: "wal-dir: /wal\n", wantErr: "--wal-dir"},
		{name: "bad type", body: "snapshot-count: many\n", wantErr: `invalid value for "snapshot-count"`},
		{name: "list for scalar", body: "name: [a, b]\n", wantErr: `invalid value for "name"`},
		{name: "bad yaml", body: "name: [\n", wantErr: "parsing config file"},
		{name: "bad URL", body: "listen-peer-urls: ftp://x:1\n", wantErr: "URL scheme must be http, https, unix, or unixs"},
		{name: "bad section", body: "client-transport-security: yes\n", wantErr: "invalid client-transport-security"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.body)
			args, env := tc.args, tc.env
			if tc.viaEnv {
				env = append(env, "ETCD_CONFIG_FILE="+p)
			} else {
				args = append(args, "--config-file", p)
			}
			var buf bytes.Buffer
			cfg, err := Load(args, env, &buf)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v\n%s", err, buf.String())
			}
			if cfg.ConfigFile != p {
				t.Errorf("ConfigFile = %q", cfg.ConfigFile)
			}
			if msg := tc.check(cfg); msg != "" {
				t.Error(msg)
			}
			if strings.Contains(buf.String(), "ETCD_BOGUS") {
				t.Error("environment must not be inspected with a config file")
			}
		})
	}
	if _, err := Load([]string{"--config-file", filepath.Join(t.TempDir(), "missing.yml")}, nil, nil); err == nil || !strings.Contains(err.Error(), "reading config file") {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestSentinelsAndUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}} {
		if _, err := Load(args, nil, nil); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("Load(%q) = %v, want flag.ErrHelp", args, err)
		}
	}
	for _, args := range [][]string{{"--version"}, {"-version"}, {"--version", "--wal-dir=/x"}} {
		if _, err := Load(args, nil, nil); !errors.Is(err, ErrVersion) {
			t.Errorf("Load(%q) = %v, want ErrVersion", args, err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"stray"}, `"stray" is not a valid flag`},
		{[]string{"--snapshot-count=abc"}, "snapshot-count"},
		{[]string{"--heartbeat-interval=-1"}, "heartbeat-interval"},
		{[]string{"--initial-cluster-state=maybe"}, `invalid value "maybe"`},
		{[]string{"--listen-peer-urls=localhost:2380"}, "URL scheme must be"},
		{[]string{"--feature-gates=Bogus=true"}, "unrecognized feature gate: Bogus"},
		{[]string{"--feature-gates=LeaseCheckpoint"}, "missing bool value"},
		{[]string{"--v2-deprecation=never"}, `invalid value "never"`},
	} {
		_, err := Load(tc.args, nil, nil)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q) = %v, want UsageError containing %q", tc.args, err, tc.want)
		}
	}
}

func TestUnsupportedAndNoopFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string // empty: accepted
		wantOut string
	}{
		{args: []string{"--wal-dir=/tmp/wal"}, wantErr: "--wal-dir"},
		{args: []string{"--cert-file=c.pem"}, wantErr: "--cert-file"},
		{args: []string{"--key-file=k.pem"}, wantErr: "--key-file"},
		{args: []string{"--trusted-ca-file=ca.pem"}, wantErr: "--trusted-ca-file"},
		{args: []string{"--client-cert-auth"}, wantErr: "--client-cert-auth"},
		{args: []string{"--auto-tls"}, wantErr: "--auto-tls"},
		{args: []string{"--peer-auto-tls=true"}, wantErr: "--peer-auto-tls"},
		{args: []string{"--peer-cert-file=p.pem"}, wantErr: "--peer-cert-file"},
		{args: []string{"--discovery-endpoints=http://1.2.3.4:2379"}, wantErr: "--discovery-endpoints"},
		{args: []string{"--discovery-srv=example.com"}, wantErr: "--discovery-srv"},
		{args: []string{"--unsafe-no-fsync"}, wantErr: "--unsafe-no-fsync"},
		{args: []string{"--listen-metrics-urls=https://127.0.0.1:2381"}, wantErr: "--listen-metrics-urls=\"https://127.0.0.1:2381\" is not supported by Ordo: TLS is not supported yet"},
		{args: []string{"--listen-metrics-urls=http://example.com:2381"}, wantErr: "expected IP in URL for binding"},
		{args: []string{"--enable-log-rotation"}, wantErr: "--enable-log-rotation"},
		{args: []string{"--host-whitelist=example.com"}, wantErr: "--host-whitelist"},
		{args: []string{"--discovery-fallback=proxy"}, wantErr: "--discovery-fallback can't be configured"},
		{args: []string{"--auth-token=oauth"}, wantErr: "unknown token type"},
		{args: []string{"--listen-client-urls=https://127.0.0.1:2379", "--advertise-client-urls=https://127.0.0.1:2379"}, wantErr: "TLS is not supported yet"},
		{args: []string{"--listen-peer-urls=unixs://peer.sock"}, wantErr: "--listen-peer-urls"},
		// Defaults of unsupported flags are fine.
		{args: []string{"--wal-dir=", "--client-cert-auth=false", "--unsafe-no-fsync=false", "--cors=*"}},
		// No-op flags are accepted with a warning.
		{args: []string{"--enable-pprof", "--max-wals=0", "--feature-gates=LeaseCheckpoint=true"}, wantOut: "flag has no effect in Ordo"},
		{args: []string{"--max-snapshots=3"}, wantOut: "--max-snapshots is deprecated"},
		// etcd's legacy flags are accepted with or without a value.
		{args: []string{"--v", "--snapshot=true", "-force"}, wantOut: "flag is no longer supported - ignoring"},
	} {
		cfg, out, err := load(t, tc.args, nil)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Load(%q) = %v, want error containing %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Load(%q): %v", tc.args, err)
			continue
		}
		if !strings.Contains(out, tc.wantOut) {
			t.Errorf("Load(%q): stderr lacks %q:\n%s", tc.args, tc.wantOut, out)
		}
		if tc.args[0] == "--enable-pprof" && !cfg.FeatureGates["LeaseCheckpoint"] {
			t.Errorf("feature gate not recorded: %v", cfg.FeatureGates)
		}
	}
}

func TestValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--heartbeat-interval=0"}, "--heartbeat-interval must be >0"},
		{[]string{"--election-timeout=400"}, "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"},
		{[]string{"--election-timeout=60000"}, "is too long"},
		{[]string{"--listen-client-urls=http://127.0.0.1:2379"}, "--advertise-client-urls is required when --listen-client-urls is set explicitly"},
		{[]string{"--listen-client-urls=http://example.com:2379", "--advertise-client-urls=http://example.com:2379"}, "expected IP in URL for binding"},
		{[]string{"--advertise-client-urls=http://:2379"}, "--advertise-client-urls"},
		{[]string{"--log-level=loud"}, "--log-level"},
		{[]string{"--logger=capnslog"}, "capnslog is removed"},
		{[]string{"--logger=logrus"}, "unknown logger option"},
		{[]string{"--log-outputs=default,stdout"}, "multi logoutput"},
		{[]string{"--log-outputs=systemd/journal"}, "systemd/journal"},
		{[]string{"--log-format=xml"}, "unknown log format"},
		{[]string{"--auto-compaction-mode=daily"}, `unknown auto-compaction-mode "daily"`},
		{[]string{"--auto-compaction-retention=soon"}, "invalid --auto-compaction-retention"},
		{[]string{"--auto-compaction-mode=revision", "--auto-compaction-retention=5m"}, "revision mode needs"},
		{[]string{"--max-learners=0"}, "--max-learners"},
		{[]string{"--disk-reserve-bytes=-1"}, "--disk-reserve-bytes"},
		{[]string{"--tls-min-version=TLS1.3", "--tls-max-version=TLS1.2"}, "min version"},
		{[]string{"--name=infra9", "--initial-cluster=infra1=http://127.0.0.1:2380"}, `couldn't find local name "infra9"`},
		{[]string{"--initial-cluster=default=http://127.0.0.1:9999"}, "--initial-cluster has default=http://127.0.0.1:9999 but missing from --initial-advertise-peer-urls=http://localhost:2380"},
		{[]string{"--initial-cluster=default=http://localhost:2380,default=http://127.0.0.1:2381", "--initial-advertise-peer-urls=http://localhost:2380,http://127.0.0.1:2381,http://127.0.0.1:2382"}, "--initial-advertise-peer-urls has http://127.0.0.1:2382 but missing from --initial-cluster"},
		{[]string{"--initial-cluster=default=http://localhost:2380,other=http://localhost:2380"}, "has duplicate url"},
		{[]string{"--initial-cluster=default"}, "invalid --initial-cluster"},
		{[]string{"--initial-cluster="}, "initial cluster unset"},
	} {
		_, _, err := load(t, tc.args, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q) = %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestBootstrapCheckSkippedWithData(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "db"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--data-dir", dir, "--name", "infra9", "--initial-cluster", "infra1=http://127.0.0.1:2380"}
	if _, _, err := load(t, args, nil); err != nil {
		t.Fatalf("restart with data must ignore the initial cluster: %v", err)
	}
	// Syntax errors still fail.
	args = []string{"--data-dir", dir, "--initial-cluster", "infra1=ftp://x:1"}
	if _, _, err := load(t, args, nil); err == nil {
		t.Fatal("bad --initial-cluster accepted")
	}
}

func TestAdvertiseMatchesResolvedHosts(t *testing.T) {
	old := lookupHost
	t.Cleanup(func() { lookupHost = old })
	lookupHost = func(_ context.Context, host string) ([]string, error) {
		if host == "node1.test" {
			return []string{"127.0.0.1"}, nil
		}
		return nil, errors.New("no such host")
	}
	args := []string{"--initial-advertise-peer-urls=http://node1.test:2380", "--initial-cluster=default=http://127.0.0.1:2380"}
	if _, out, err := load(t, args, nil); err != nil {
		t.Fatalf("resolved URLs should match: %v\n%s", err, out)
	}
	args = []string{"--initial-advertise-peer-urls=http://node2.test:2380", "--initial-cluster=default=http://127.0.0.1:2380"}
	if _, _, err := load(t, args, nil); err == nil {
		t.Fatal("unresolvable mismatch accepted")
	}
}

func TestParseURLs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // canonical form; empty means error
		wantErr string
	}{
		{in: "http://localhost:2379", want: "http://localhost:2379"},
		{in: "http://127.0.0.1:2379", want: "http://127.0.0.1:2379"},
		{in: "https://example.com:443", want: "https://example.com:443"},
		{in: "http://[::1]:2379", want: "http://[::1]:2379"},
		{in: " http://127.0.0.1:2379 ", want: "http://127.0.0.1:2379"},
		{in: "unix://localhost:2379", want: "unix://localhost:2379"},
		{in: "unix:///tmp/ordo.sock", want: "unix:///tmp/ordo.sock"},
		{in: "unixs://ordo.sock", want: "unixs://ordo.sock"},
		{in: "ftp://localhost:21", wantErr: "URL scheme must be http, https, unix, or unixs"},
		{in: "localhost:2379", wantErr: "URL scheme must be"},
		{in: "http://localhost", wantErr: `does not have the form "host:port"`},
		{in: "http://localhost:2379/path", wantErr: "must not contain a path"},
		{in: "http://localhost:99999", wantErr: "invalid port"},
		{in: "unix://", wantErr: "no path"},
	} {
		got, err := ParseURL(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseURL(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseURL(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	us, err := ParseURLs([]string{"http://b:1", "http://a:1", "http://b:1"})
	if err != nil || urlsString(us) != "http://a:1,http://b:1" {
		t.Errorf("ParseURLs sorts and de-duplicates: got %v, %v", urlsString(us), err)
	}
	m, err := ParseInitialCluster("a=http://h1:1,b=http://h2:2,a=http://h3:3")
	if err != nil || len(m) != 2 || len(m["a"]) != 2 {
		t.Errorf("ParseInitialCluster = %v, %v", m, err)
	}
}

func TestAutoCompaction(t *testing.T) {
	for _, tc := range []struct {
		mode, retention string
		period          time.Duration
		revs            int64
		wantErr         bool
	}{
		{mode: "periodic", retention: "0"},
		{mode: "periodic", retention: "", period: 0},
		{mode: "periodic", retention: "5", period: 5 * time.Hour},
		{mode: "periodic", retention: "30m", period: 30 * time.Minute},
		{mode: "periodic", retention: "1h30m", period: 90 * time.Minute},
		{mode: "periodic", retention: "-5m", wantErr: true},
		{mode: "periodic", retention: "-1", wantErr: true},
		{mode: "periodic", retention: "abc", wantErr: true},
		{mode: "revision", retention: "1000", revs: 1000},
		{mode: "revision", retention: "0", revs: 0},
		{mode: "revision", retention: "5m", wantErr: true},
		{mode: "revision", retention: "-3", wantErr: true},
	} {
		c := &Config{AutoCompactionMode: tc.mode, AutoCompactionRetention: tc.retention}
		if tc.mode == "periodic" {
			d, err := c.AutoCompactionPeriod()
			if (err != nil) != tc.wantErr || d != tc.period {
				t.Errorf("periodic %q: got %v, %v", tc.retention, d, err)
			}
			if _, err := c.AutoCompactionRevisions(); err == nil {
				t.Errorf("AutoCompactionRevisions in periodic mode must fail")
			}
		} else {
			n, err := c.AutoCompactionRevisions()
			if (err != nil) != tc.wantErr || n != tc.revs {
				t.Errorf("revision %q: got %v, %v", tc.retention, n, err)
			}
			if _, err := c.AutoCompactionPeriod(); err == nil {
				t.Errorf("AutoCompactionPeriod in revision mode must fail")
			}
		}
	}
}

func TestPrintFlags(t *testing.T) {
	var buf bytes.Buffer
	if err := PrintFlags(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"Member:", "Clustering:", "Security:", "Logging:", "Unsafe feature:",
		"--name 'default'", "--data-dir '${name}.ordo'",
		"--wal-dir ''", "[not supported by Ordo:", "[no-op in Ordo:", "ETCD_DATA_DIR",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if strings.Contains(out, "--cluster-active-size") || strings.Contains(out, "--version '") {
		t.Error("help must not list legacy or command-only flags as server flags")
	}
}
