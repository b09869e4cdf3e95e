package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Cluster states accepted by --initial-cluster-state.
const (
	ClusterStateNew      = "new"
	ClusterStateExisting = "existing"
)

// Auto-compaction modes accepted by --auto-compaction-mode.
const (
	CompactionModePeriodic = "periodic"
	CompactionModeRevision = "revision"
)

// Defaults that differ from a plain zero value or that other packages may want to refer to.
const (
	DefaultName                = "default"
	DefaultDataDirSuffix       = ".ordo"
	DefaultListenPeerURL       = "http://localhost:2380"
	DefaultListenClientURL     = "http://localhost:2379"
	DefaultInitialCluster      = DefaultName + "=" + DefaultListenPeerURL
	DefaultInitialClusterToken = "etcd-cluster"
	DefaultSnapshotCount       = 10000
	DefaultSnapshotCatchUp     = 5000
	DefaultMaxRequestBytes     = 1572864 // 1.5 MiB
	DefaultMaxTxnOps           = 128
	// DefaultQuotaBackendBytes is the quota used when --quota-backend-bytes is 0.
	DefaultQuotaBackendBytes = int64(2 << 30)
	// MaxElectionTimeout is the largest --election-timeout etcd accepts.
	MaxElectionTimeout = 50 * time.Second
)

// ErrVersion is returned by Load when --version was given: the caller prints the version and exits 0.
var ErrVersion = errors.New("version requested")

// ErrUnsetAdvertiseClientURLs is etcd's error for --listen-client-urls without --advertise-client-urls.
var ErrUnsetAdvertiseClientURLs = errors.New("--advertise-client-urls is required when --listen-client-urls is set explicitly")

// UsageError reports a malformed command line: an unknown flag, a flag value that does not parse,
// or a stray argument. Callers usually print it with a pointer to --help and exit 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// TLSInfo holds the TLS settings of the client or the peer listeners. Ordo does not implement TLS
// yet: Load rejects any non-default value, so a running server always sees the zero TLSInfo.
type TLSInfo struct {
	CertFile            string
	KeyFile             string
	ClientCertFile      string
	ClientKeyFile       string
	TrustedCAFile       string
	CRLFile             string
	ClientCertAuth      bool
	AutoTLS             bool
	AllowedCNs          []string
	AllowedHostnames    []string
	SkipClientSANVerify bool
}

// Config is the complete configuration of one Ordo member.
type Config struct {
	// ConfigFile is the YAML file the configuration was read from, if any.
	ConfigFile string

	// Member.
	Name    string // --name
	DataDir string // --data-dir; "<name>.ordo" when not set
	WalDir  string // --wal-dir; Load rejects a non-empty value

	ListenClientURLs         []url.URL // --listen-client-urls
	AdvertiseClientURLs      []url.URL // --advertise-client-urls
	ListenPeerURLs           []url.URL // --listen-peer-urls
	InitialAdvertisePeerURLs []url.URL // --initial-advertise-peer-urls

	// Clustering.
	InitialCluster      string               // --initial-cluster, as given (after name defaulting)
	InitialClusterMap   map[string][]url.URL // InitialCluster parsed: member name -> peer URLs
	InitialClusterState string               // --initial-cluster-state: ClusterStateNew or ClusterStateExisting
	InitialClusterToken string               // --initial-cluster-token
	StrictReconfigCheck bool                 // --strict-reconfig-check
	PreVote             bool                 // --pre-vote
	MaxLearners         int                  // --max-learners

	// Raft and storage.
	SnapshotCount              uint64        // --snapshot-count
	SnapshotCatchUpEntries     uint64        // --snapshot-catchup-entries
	HeartbeatInterval          time.Duration // --heartbeat-interval (milliseconds on the command line)
	ElectionTimeout            time.Duration // --election-timeout (milliseconds on the command line)
	InitialElectionTickAdvance bool          // --initial-election-tick-advance
	QuotaBackendBytes          int64         // --quota-backend-bytes; 0 = 2 GiB, negative = no quota
	ForceNewCluster            bool          // --force-new-cluster

	// Requests and gRPC.
	MaxRequestBytes       uint          // --max-request-bytes
	MaxTxnOps             uint          // --max-txn-ops
	MaxConcurrentStreams  uint32        // --max-concurrent-streams
	GRPCKeepAliveMinTime  time.Duration // --grpc-keepalive-min-time
	GRPCKeepAliveInterval time.Duration // --grpc-keepalive-interval
	GRPCKeepAliveTimeout  time.Duration // --grpc-keepalive-timeout
	EnableGRPCGateway     bool          // --enable-grpc-gateway

	// MVCC.
	AutoCompactionMode          string        // --auto-compaction-mode
	AutoCompactionRetention     string        // --auto-compaction-retention, see AutoCompactionPeriod and AutoCompactionRevisions
	WatchProgressNotifyInterval time.Duration // --watch-progress-notify-interval
	WatchBufferBytes            int64         // --watch-buffer-bytes (Ordo only): memory for recent watch events
	SkipStartupVerify           bool          // --skip-startup-verify (Ordo only): skip reading the whole store at startup
	DiskReserveBytes            int64         // --disk-reserve-bytes (Ordo only): free space kept on the data dir's filesystem; 0 = no check
	EnablePprof                 bool          // --enable-pprof: /debug/pprof/ on the client URLs
	Metrics                     string        // --metrics: "basic", or "extensive" for gRPC latency histograms
	ListenMetricsURLs           []url.URL     // --listen-metrics-urls: /metrics and /health only

	// Auth.
	AuthToken    string // --auth-token ("simple" only for now)
	BcryptCost   uint   // --bcrypt-cost
	AuthTokenTTL uint   // --auth-token-ttl, seconds

	// Logging.
	Logger                      string   // --logger: "zap"
	LogLevel                    string   // --log-level
	LogFormat                   string   // --log-format: "json" or "console"
	LogOutputs                  []string // --log-outputs: "default" (stderr), "stderr", "stdout", or file paths
	WarningApplyDuration        time.Duration
	WarningUnaryRequestDuration time.Duration

	// Security. Not implemented yet: Load rejects non-default values.
	ClientTLS              TLSInfo
	PeerTLS                TLSInfo
	CipherSuites           []string
	TLSMinVersion          string
	TLSMaxVersion          string
	SelfSignedCertValidity uint

	// FeatureGates holds the --feature-gates settings (validated against etcd's gate names; Ordo
	// does not act on them).
	FeatureGates map[string]bool

	// ExplicitlySet holds the names of the flags set on the command line or in the environment,
	// or, with --config-file, the top-level keys present in the file.
	ExplicitlySet map[string]bool
}

// IsNewCluster reports whether the member bootstraps a new cluster (--initial-cluster-state=new).
func (c *Config) IsNewCluster() bool { return c.InitialClusterState == ClusterStateNew }

// ElectionTicks is the election timeout measured in heartbeat ticks.
func (c *Config) ElectionTicks() int {
	if c.HeartbeatInterval <= 0 {
		return 0
	}
	return int(c.ElectionTimeout / c.HeartbeatInterval)
}

// DefaultDiskReserveBytes is the default of --disk-reserve-bytes, the free space a member
// keeps on the filesystem of its data dir: below it, writes are refused and NOSPACE is raised.
// Pebble takes space in steps: a new WAL is preallocated at 1.1 memtables (70 MiB), a memtable
// flush writes up to one memtable (64 MiB) of sstables, a second memtable may be flushing, and
// compactions write their output before they free their input; the reserve covers that plus
// slack, so the alarm entries and the deletes and compactions an operator issues to recover
// still fit.
const DefaultDiskReserveBytes = 320 << 20

// BackendQuota returns the storage quota in bytes with etcd's semantics applied: 0 means the
// 2 GiB default, and a negative value (returned as is) means no quota.
func (c *Config) BackendQuota() int64 {
	if c.QuotaBackendBytes == 0 {
		return DefaultQuotaBackendBytes
	}
	return c.QuotaBackendBytes
}

// AutoCompactionPeriod returns the retention window of periodic auto-compaction. A plain number
// counts hours ("5" is 5h); otherwise the value is a Go duration ("30m"). Zero disables
// auto-compaction. It fails when the mode is not periodic or the value does not parse.
func (c *Config) AutoCompactionPeriod() (time.Duration, error) {
	if c.AutoCompactionMode != CompactionModePeriodic {
		return 0, fmt.Errorf("--auto-compaction-mode is %q, not %q", c.AutoCompactionMode, CompactionModePeriodic)
	}
	r := strings.TrimSpace(c.AutoCompactionRetention)
	if r == "" {
		return 0, nil
	}
	if h, err := strconv.ParseInt(r, 10, 64); err == nil {
		if h < 0 || h > int64(time.Duration(1<<63-1)/time.Hour) {
			return 0, fmt.Errorf("invalid --auto-compaction-retention %q: out of range", r)
		}
		return time.Duration(h) * time.Hour, nil
	}
	d, err := time.ParseDuration(r)
	if err != nil {
		return 0, fmt.Errorf("invalid --auto-compaction-retention %q: expected a number of hours or a duration such as \"30m\": %w", r, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid --auto-compaction-retention %q: negative duration", r)
	}
	return d, nil
}

// AutoCompactionRevisions returns the number of revisions revision-mode auto-compaction keeps.
// Zero disables auto-compaction. It fails when the mode is not revision or the value is not a
// non-negative integer.
func (c *Config) AutoCompactionRevisions() (int64, error) {
	if c.AutoCompactionMode != CompactionModeRevision {
		return 0, fmt.Errorf("--auto-compaction-mode is %q, not %q", c.AutoCompactionMode, CompactionModeRevision)
	}
	r := strings.TrimSpace(c.AutoCompactionRetention)
	if r == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(r, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid --auto-compaction-retention %q: revision mode needs a non-negative number of revisions", r)
	}
	return n, nil
}
