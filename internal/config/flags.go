package config

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// handling says what Ordo does with an etcd flag.
type handling int

const (
	// supported flags are parsed into Config and honoured by the server.
	supported handling = iota
	// noop flags are accepted and validated but have no effect in Ordo (a warning is logged
	// when one is set to a non-default value).
	noop
	// unsupported flags make Load fail when set to a value other than their default.
	unsupported
	// legacy flags are flags that etcd itself has long ignored; like etcd, Ordo accepts them
	// (with or without a value) and warns.
	legacy
)

// Help sections, in the order etcd's --help prints them.
const (
	gMember     = "Member"
	gClustering = "Clustering"
	gSecurity   = "Security"
	gAuth       = "Auth"
	gProfiling  = "Profiling and Monitoring"
	gLogging    = "Logging"
	gTracing    = "Distributed tracing"
	gFeatures   = "Features"
	gUnsafe     = "Unsafe feature"
	gLegacy     = "" // not shown
)

var helpGroups = []string{gMember, gClustering, gSecurity, gAuth, gProfiling, gLogging, gTracing, gFeatures, gUnsafe}

// Reasons shown for flags Ordo does not implement.
const (
	whyTLS       = "TLS is not supported yet"
	whyDiscovery = "discovery is not supported; use --initial-cluster"
	whyTracing   = "Ordo has no distributed tracing"
	whyBolt      = "Ordo stores data in Pebble, not bbolt"
	whyWAL       = "Ordo keeps its raft log inside the single Pebble database under --data-dir"
	whyRafthttp  = "Ordo's peer transport has its own timeouts"
)

// flagSpec describes one etcd server flag.
type flagSpec struct {
	name     string
	group    string
	def      string // default, in the textual form accepted on the command line
	helpDef  string // default as shown by --help when it differs from def
	usage    string
	handling handling
	why      string // for noop and unsupported flags: why Ordo does not act on it
	// yaml is the flag's key in the configuration file: "" means the flag name, "-" means the
	// flag cannot be set from the file. Dotted keys name nested keys.
	yaml       string
	deprecated string // warning logged when the flag is set
	bind       binder
	// defCanon is the canonical form of def, filled by newFlagTable.
	defCanon string
}

func (s *flagSpec) yamlKey() string {
	switch s.yaml {
	case "":
		return s.name
	case "-":
		return ""
	default:
		return s.yaml
	}
}

func (s *flagSpec) isBool() bool {
	b, ok := s.bind.(boolBinder)
	return ok && b.isBool()
}

// flagTable is the full list of etcd v3.7 server flags bound to the fields of one Config.
type flagTable struct {
	specs  []*flagSpec
	byName map[string]*flagSpec
	byYAML map[string]*flagSpec
}

// Scratch targets for flags that do not map to a Config field.
func anyString() stringVal       { return stringVal{new(string)} }
func anyBool() boolVal           { return boolVal{new(bool)} }
func anyUint() uintVal           { return uintVal{new(uint)} }
func anyInt() intVal             { return intVal{new(int)} }
func anyDuration() durationVal   { return durationVal{new(time.Duration)} }
func anyURLs() urlsVal           { return urlsVal{new([]url.URL)} }
func anyStrings() stringsVal     { return stringsVal{p: new([]string)} }
func anyUniqStrings() stringsVal { return stringsVal{p: new([]string), unique: true} }

// specsFor lists every etcd v3.7 server flag, bound to c. It is the one place that says how each
// flag is handled; --help is generated from it.
func specsFor(c *Config, configFile *string, version *bool) []*flagSpec {
	return []*flagSpec{
		// Member.
		{name: "name", group: gMember, def: DefaultName, usage: "Human-readable name for this member.", bind: stringVal{&c.Name}},
		{name: "data-dir", group: gMember, helpDef: "${name}" + DefaultDataDirSuffix, usage: "Path to the data directory.", bind: stringVal{&c.DataDir}},
		{name: "wal-dir", group: gMember, usage: "Path to a dedicated WAL directory.", handling: unsupported, why: whyWAL, bind: stringVal{&c.WalDir}},
		{name: "snapshot-count", group: gMember, def: strconv.Itoa(DefaultSnapshotCount), usage: "Number of committed transactions to trigger a snapshot.", bind: uint64Val{&c.SnapshotCount}},
		{name: "heartbeat-interval", group: gMember, def: "100", usage: "Time (in milliseconds) of a heartbeat interval.", bind: millisVal{&c.HeartbeatInterval}},
		{name: "election-timeout", group: gMember, def: "1000", usage: "Time (in milliseconds) for an election to timeout.", bind: millisVal{&c.ElectionTimeout}},
		{name: "initial-election-tick-advance", group: gMember, def: "true", usage: "Whether to fast-forward initial election ticks on boot for faster election.", bind: boolVal{&c.InitialElectionTickAdvance}},
		{name: "listen-peer-urls", group: gMember, def: DefaultListenPeerURL, usage: "List of URLs to listen on for peer traffic.", bind: urlsVal{&c.ListenPeerURLs}},
		{name: "listen-client-urls", group: gMember, def: DefaultListenClientURL, usage: "List of URLs to listen on for client gRPC and HTTP traffic.", bind: urlsVal{&c.ListenClientURLs}},
		{name: "listen-client-http-urls", group: gMember, usage: "List of URLs to listen on for HTTP-only client traffic.", handling: unsupported, why: "separate HTTP-only client listeners are not supported; HTTP is served on --listen-client-urls", bind: anyURLs()},
		{name: "max-snapshots", group: gMember, def: "5", usage: "Maximum number of snapshot files to retain (0 is unlimited).", handling: noop, why: "Ordo keeps no snapshot files", deprecated: "--max-snapshots is deprecated in 3.6 and will be decommissioned in 3.8.", bind: anyUint()},
		{name: "max-wals", group: gMember, def: "5", usage: "Maximum number of WAL files to retain (0 is unlimited).", handling: noop, why: "Ordo keeps no WAL files", bind: anyUint()},
		{name: "memory-mlock", group: gMember, def: "false", usage: "Lock the server's memory pages in RAM.", handling: noop, why: "memory locking is not implemented", bind: anyBool()},
		{name: "quota-backend-bytes", group: gMember, def: "0", usage: "Maximum size in bytes of the backend database; exceeding it raises a NOSPACE alarm and makes the cluster read-only. 0 means the default 2 GiB, a negative value means no quota.", bind: int64Val{&c.QuotaBackendBytes}},
		{name: "backend-bbolt-freelist-type", group: gMember, helpDef: "map", usage: "bbolt freelist type (array or map).", handling: noop, why: whyBolt, bind: anyString()},
		{name: "backend-batch-interval", group: gMember, def: "0s", usage: "Maximum time before committing the backend transaction.", handling: noop, why: whyBolt, bind: anyDuration()},
		{name: "backend-batch-limit", group: gMember, def: "0", usage: "Maximum operations before committing the backend transaction.", handling: noop, why: whyBolt, bind: anyInt()},
		{name: "max-txn-ops", group: gMember, def: strconv.Itoa(DefaultMaxTxnOps), usage: "Maximum number of operations permitted in a transaction.", bind: uintVal{&c.MaxTxnOps}},
		{name: "max-request-bytes", group: gMember, def: strconv.Itoa(DefaultMaxRequestBytes), usage: "Maximum client request size in bytes the server will accept.", bind: uintVal{&c.MaxRequestBytes}},
		{name: "max-concurrent-streams", group: gMember, def: "4294967295", helpDef: "math.MaxUint32", usage: "Maximum concurrent streams that each client can open at a time.", bind: uint32Val{&c.MaxConcurrentStreams}},
		{name: "grpc-keepalive-min-time", group: gMember, def: "5s", usage: "Minimum interval a client should wait before pinging the server.", bind: durationVal{&c.GRPCKeepAliveMinTime}},
		{name: "grpc-keepalive-interval", group: gMember, def: "2h", usage: "Frequency of server-to-client pings checking that a connection is alive (0 to disable).", bind: durationVal{&c.GRPCKeepAliveInterval}},
		{name: "grpc-keepalive-timeout", group: gMember, def: "20s", usage: "Additional wait before closing a non-responsive connection (0 to disable).", bind: durationVal{&c.GRPCKeepAliveTimeout}},
		{name: "socket-reuse-port", group: gMember, yaml: "socket-options.reuse-port", def: "false", usage: "Set SO_REUSEPORT on listeners.", handling: unsupported, why: "socket options are not supported yet", bind: anyBool()},
		{name: "socket-reuse-address", group: gMember, yaml: "socket-options.reuse-address", def: "false", usage: "Set SO_REUSEADDR on listeners.", handling: unsupported, why: "socket options are not supported yet", bind: anyBool()},
		{name: "enable-grpc-gateway", group: gMember, def: "true", usage: "Enable the gRPC gateway (JSON over HTTP under /v3/).", bind: boolVal{&c.EnableGRPCGateway}},
		{name: "raft-read-timeout", group: gMember, yaml: "-", def: "5s", usage: "Read timeout set on each peer connection.", handling: noop, why: whyRafthttp, bind: anyDuration()},
		{name: "raft-write-timeout", group: gMember, yaml: "-", def: "5s", usage: "Write timeout set on each peer connection.", handling: noop, why: whyRafthttp, bind: anyDuration()},
		{name: "feature-gates", group: gMember, usage: "Comma-separated key=value pairs for etcd's alpha/experimental feature gates (" + strings.Join(knownFeatureGates, ", ") + ").", handling: noop, why: "feature gates are validated but Ordo does not act on them", bind: featureGatesVal{&c.FeatureGates}},

		// Clustering.
		{name: "initial-advertise-peer-urls", group: gClustering, def: DefaultListenPeerURL, usage: "List of this member's peer URLs to advertise to the rest of the cluster.", bind: urlsVal{&c.InitialAdvertisePeerURLs}},
		{name: "initial-cluster", group: gClustering, def: DefaultInitialCluster, usage: "Initial cluster configuration for bootstrapping (name=peerURL,...).", bind: stringVal{&c.InitialCluster}},
		{name: "initial-cluster-state", group: gClustering, def: ClusterStateNew, usage: "Initial cluster state ('new' when bootstrapping a new cluster or 'existing' when adding a member to an existing cluster). Ignored on restarts.", bind: choiceVal{&c.InitialClusterState, []string{ClusterStateNew, ClusterStateExisting}}},
		{name: "initial-cluster-token", group: gClustering, def: DefaultInitialClusterToken, usage: "Initial cluster token for the cluster during bootstrap.", bind: stringVal{&c.InitialClusterToken}},
		{name: "advertise-client-urls", group: gClustering, def: DefaultListenClientURL, usage: "List of this member's client URLs to advertise to the public.", bind: urlsVal{&c.AdvertiseClientURLs}},
		{name: "discovery-token", group: gClustering, yaml: "discovery-config.token", usage: "V3 discovery: discovery token for the cluster to be bootstrapped.", handling: unsupported, why: whyDiscovery, bind: anyString()},
		{name: "discovery-endpoints", group: gClustering, yaml: "discovery-config.client.endpoints", usage: "V3 discovery: list of gRPC endpoints of the discovery service.", handling: unsupported, why: whyDiscovery, bind: anyUniqStrings()},
		{name: "discovery-dial-timeout", group: gClustering, yaml: "discovery-config.client.dial-timeout", def: "2s", usage: "V3 discovery: dial timeout for client connections.", handling: noop, why: whyDiscovery, bind: anyDuration()},
		{name: "discovery-request-timeout", group: gClustering, yaml: "discovery-config.client.request-timeout", def: "5s", usage: "V3 discovery: timeout for discovery requests.", handling: noop, why: whyDiscovery, bind: anyDuration()},
		{name: "discovery-keepalive-time", group: gClustering, yaml: "discovery-config.client.keepalive-time", def: "2s", usage: "V3 discovery: keepalive time for client connections.", handling: noop, why: whyDiscovery, bind: anyDuration()},
		{name: "discovery-keepalive-timeout", group: gClustering, yaml: "discovery-config.client.keepalive-timeout", def: "6s", usage: "V3 discovery: keepalive timeout for client connections.", handling: noop, why: whyDiscovery, bind: anyDuration()},
		{name: "discovery-insecure-transport", group: gClustering, yaml: "discovery-config.client.secure.insecure-transport", def: "true", usage: "V3 discovery: disable transport security for client connections.", handling: noop, why: whyDiscovery, bind: anyBool()},
		{name: "discovery-insecure-skip-tls-verify", group: gClustering, yaml: "discovery-config.client.secure.insecure-skip-tls-verify", def: "false", usage: "V3 discovery: skip server certificate verification.", handling: noop, why: whyDiscovery, bind: anyBool()},
		{name: "discovery-cert", group: gClustering, yaml: "discovery-config.client.secure.cert", usage: "V3 discovery: TLS certificate file of the client.", handling: noop, why: whyDiscovery, bind: anyString()},
		{name: "discovery-key", group: gClustering, yaml: "discovery-config.client.secure.key", usage: "V3 discovery: TLS key file of the client.", handling: noop, why: whyDiscovery, bind: anyString()},
		{name: "discovery-cacert", group: gClustering, yaml: "discovery-config.client.secure.cacert", usage: "V3 discovery: CA bundle to verify TLS-enabled servers.", handling: noop, why: whyDiscovery, bind: anyString()},
		{name: "discovery-user", group: gClustering, yaml: "discovery-config.client.auth.username", usage: "V3 discovery: username[:password] for authentication.", handling: noop, why: whyDiscovery, bind: anyString()},
		{name: "discovery-password", group: gClustering, yaml: "discovery-config.client.auth.password", usage: "V3 discovery: password for authentication.", handling: noop, why: whyDiscovery, bind: anyString()},
		{name: "discovery-fallback", group: gClustering, yaml: "-", def: "exit", usage: "Expected behaviour ('exit') when discovery fails.", handling: noop, why: whyDiscovery, bind: choiceVal{new(string), []string{"exit", "proxy"}}},
		{name: "discovery-srv", group: gClustering, usage: "DNS SRV domain used to bootstrap the cluster.", handling: unsupported, why: whyDiscovery, bind: anyString()},
		{name: "discovery-srv-name", group: gClustering, usage: "Suffix to the DNS SRV name queried when bootstrapping.", handling: unsupported, why: whyDiscovery, bind: anyString()},
		{name: "strict-reconfig-check", group: gClustering, def: "true", usage: "Reject reconfiguration requests that would cause quorum loss.", bind: boolVal{&c.StrictReconfigCheck}},
		{name: "pre-vote", group: gClustering, def: "true", usage: "Enable the raft Pre-Vote algorithm to prevent disruption when a partitioned member rejoins.", bind: boolVal{&c.PreVote}},
		{name: "auto-compaction-retention", group: gClustering, def: "0", usage: "Auto compaction retention: hours (or a duration such as '30m') in periodic mode, revisions in revision mode. 0 disables auto compaction.", bind: stringVal{&c.AutoCompactionRetention}},
		{name: "auto-compaction-mode", group: gClustering, def: CompactionModePeriodic, usage: "How to interpret --auto-compaction-retention: 'periodic' (duration) or 'revision' (revision count).", bind: stringVal{&c.AutoCompactionMode}},
		{name: "v2-deprecation", group: gClustering, def: "write-only", usage: "Phase of v2store deprecation. Deprecated in etcd; the default is enforced.", handling: noop, why: "Ordo has no v2 store", deprecated: "--v2-deprecation is deprecated and scheduled for removal in v3.8. The default value is enforced, ignoring user input.", bind: choiceVal{new(string), []string{"not-yet", "write-only", "write-only-skip-check", "write-only-drop-data", "gone"}}},

		// Security.
		{name: "cert-file", group: gSecurity, yaml: "client-transport-security.cert-file", usage: "Path to the client server TLS cert file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.ClientTLS.CertFile}},
		{name: "key-file", group: gSecurity, yaml: "client-transport-security.key-file", usage: "Path to the client server TLS key file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.ClientTLS.KeyFile}},
		{name: "client-cert-auth", group: gSecurity, yaml: "client-transport-security.client-cert-auth", def: "false", usage: "Enable client cert authentication.", handling: unsupported, why: whyTLS, bind: boolVal{&c.ClientTLS.ClientCertAuth}},
		{name: "client-cert-file", group: gSecurity, yaml: "client-transport-security.client-cert-file", usage: "Path to an explicit client TLS cert file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.ClientTLS.ClientCertFile}},
		{name: "client-key-file", group: gSecurity, yaml: "client-transport-security.client-key-file", usage: "Path to an explicit client TLS key file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.ClientTLS.ClientKeyFile}},
		{name: "client-crl-file", group: gSecurity, yaml: "-", usage: "Path to the client certificate revocation list file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.ClientTLS.CRLFile}},
		{name: "client-cert-allowed-hostname", group: gSecurity, yaml: "client-transport-security.allowed-hostname", usage: "Comma-separated list of allowed SAN hostnames for client cert authentication.", handling: unsupported, why: whyTLS, bind: stringsVal{p: &c.ClientTLS.AllowedHostnames}},
		{name: "trusted-ca-file", group: gSecurity, yaml: "client-transport-security.trusted-ca-file", usage: "Path to the client server TLS trusted CA cert file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.ClientTLS.TrustedCAFile}},
		{name: "auto-tls", group: gSecurity, yaml: "client-transport-security.auto-tls", def: "false", usage: "Client TLS using generated certificates.", handling: unsupported, why: whyTLS, bind: boolVal{&c.ClientTLS.AutoTLS}},
		{name: "peer-cert-file", group: gSecurity, yaml: "peer-transport-security.cert-file", usage: "Path to the peer server TLS cert file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.PeerTLS.CertFile}},
		{name: "peer-key-file", group: gSecurity, yaml: "peer-transport-security.key-file", usage: "Path to the peer server TLS key file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.PeerTLS.KeyFile}},
		{name: "peer-client-cert-auth", group: gSecurity, yaml: "peer-transport-security.client-cert-auth", def: "false", usage: "Enable peer client cert authentication.", handling: unsupported, why: whyTLS, bind: boolVal{&c.PeerTLS.ClientCertAuth}},
		{name: "peer-client-cert-file", group: gSecurity, yaml: "peer-transport-security.client-cert-file", usage: "Path to an explicit peer client TLS cert file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.PeerTLS.ClientCertFile}},
		{name: "peer-client-key-file", group: gSecurity, yaml: "peer-transport-security.client-key-file", usage: "Path to an explicit peer client TLS key file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.PeerTLS.ClientKeyFile}},
		{name: "peer-trusted-ca-file", group: gSecurity, yaml: "peer-transport-security.trusted-ca-file", usage: "Path to the peer server TLS trusted CA file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.PeerTLS.TrustedCAFile}},
		{name: "peer-cert-allowed-cn", group: gSecurity, yaml: "peer-transport-security.allowed-cn", usage: "Comma-separated list of allowed CNs for inter-peer TLS authentication.", handling: unsupported, why: whyTLS, bind: stringsVal{p: &c.PeerTLS.AllowedCNs}},
		{name: "peer-cert-allowed-hostname", group: gSecurity, yaml: "peer-transport-security.allowed-hostname", usage: "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication.", handling: unsupported, why: whyTLS, bind: stringsVal{p: &c.PeerTLS.AllowedHostnames}},
		{name: "peer-auto-tls", group: gSecurity, yaml: "peer-transport-security.auto-tls", def: "false", usage: "Peer TLS using self-generated certificates.", handling: unsupported, why: whyTLS, bind: boolVal{&c.PeerTLS.AutoTLS}},
		{name: "peer-crl-file", group: gSecurity, yaml: "-", usage: "Path to the peer certificate revocation list file.", handling: unsupported, why: whyTLS, bind: stringVal{&c.PeerTLS.CRLFile}},
		{name: "peer-skip-client-san-verification", group: gSecurity, yaml: "peer-transport-security.skip-client-san-verification", def: "false", usage: "Skip verification of the SAN field in client certificates for peer connections.", handling: unsupported, why: whyTLS, bind: boolVal{&c.PeerTLS.SkipClientSANVerify}},
		{name: "self-signed-cert-validity", group: gSecurity, def: "1", usage: "Validity period in years of auto-generated client and peer certificates.", handling: noop, why: "only used with --auto-tls / --peer-auto-tls", bind: uintVal{&c.SelfSignedCertValidity}},
		{name: "cipher-suites", group: gSecurity, usage: "Comma-separated list of supported TLS cipher suites (empty means Go's defaults).", handling: noop, why: "only used with TLS", bind: stringsVal{p: &c.CipherSuites}},
		{name: "tls-min-version", group: gSecurity, def: "TLS1.2", usage: "Minimum TLS version: TLS1.2 or TLS1.3.", handling: noop, why: "only used with TLS", bind: choiceVal{&c.TLSMinVersion, []string{"", "TLS1.2", "TLS1.3"}}},
		{name: "tls-max-version", group: gSecurity, usage: "Maximum TLS version: TLS1.2 or TLS1.3 (empty defers to Go).", handling: noop, why: "only used with TLS", bind: choiceVal{&c.TLSMaxVersion, []string{"", "TLS1.2", "TLS1.3"}}},
		{name: "cors", group: gSecurity, def: "*", usage: "Comma-separated whitelist of origins for CORS (empty or * means allow all).", handling: unsupported, why: "CORS restrictions are not implemented", bind: anyUniqStrings()},
		{name: "host-whitelist", group: gSecurity, def: "*", usage: "Acceptable hostnames from HTTP client requests if the server is not secure (empty or * means allow all).", handling: unsupported, why: "host whitelisting is not implemented", bind: anyUniqStrings()},

		// Auth.
		{name: "auth-token", group: gAuth, def: "simple", usage: "Authentication token type and its options ('simple' or 'jwt').", bind: stringVal{&c.AuthToken}},
		{name: "bcrypt-cost", group: gAuth, def: "10", usage: "Cost of the bcrypt algorithm for hashing auth passwords (4 to 31).", bind: uintVal{&c.BcryptCost}},
		{name: "auth-token-ttl", group: gAuth, def: "300", usage: "Lifetime in seconds of simple auth tokens.", bind: uintVal{&c.AuthTokenTTL}},

		// Profiling and monitoring.
		{name: "enable-pprof", group: gProfiling, def: "false", usage: "Enable runtime profiling data via HTTP at client URL + /debug/pprof/.", bind: boolVal{&c.EnablePprof}},
		{name: "metrics", group: gProfiling, def: "basic", usage: "Level of detail for exported metrics: 'basic' or 'extensive'.", bind: choiceVal{&c.Metrics, []string{"basic", "extensive"}}},
		{name: "listen-metrics-urls", group: gProfiling, usage: "List of URLs to listen on for the /metrics and /health endpoints.", bind: urlsVal{&c.ListenMetricsURLs}},

		// Logging.
		{name: "logger", group: gLogging, def: "zap", usage: "Only 'zap' is supported, for structured logging.", bind: stringVal{&c.Logger}},
		{name: "log-outputs", group: gLogging, def: "default", usage: "Comma-separated log targets: 'default' or 'stderr' (standard error), 'stdout', or file paths.", bind: stringsVal{p: &c.LogOutputs, unique: true}},
		{name: "log-level", group: gLogging, def: "info", usage: "Log level: debug, info, warn, error, panic, or fatal.", bind: stringVal{&c.LogLevel}},
		{name: "log-format", group: gLogging, def: "json", usage: "Log format: json or console.", bind: stringVal{&c.LogFormat}},
		{name: "enable-log-rotation", group: gLogging, def: "false", usage: "Enable log rotation of a single log-outputs file target.", handling: unsupported, why: "log rotation is not supported; use an external rotator", bind: anyBool()},
		{name: "log-rotation-config-json", group: gLogging, def: `{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}`, usage: "Log rotation settings, used with --enable-log-rotation.", handling: noop, why: "only used with --enable-log-rotation", bind: anyString()},
		{name: "warning-unary-request-duration", group: gLogging, def: "300ms", usage: "Log a warning when a unary request takes longer than this.", bind: durationVal{&c.WarningUnaryRequestDuration}},

		// Distributed tracing.
		{name: "enable-distributed-tracing", group: gTracing, def: "false", usage: "Enable distributed tracing.", handling: noop, why: whyTracing, bind: anyBool()},
		{name: "distributed-tracing-address", group: gTracing, def: "localhost:4317", usage: "Distributed tracing collector address.", handling: noop, why: whyTracing, bind: anyString()},
		{name: "distributed-tracing-service-name", group: gTracing, def: "etcd", usage: "Distributed tracing service name.", handling: noop, why: whyTracing, bind: anyString()},
		{name: "distributed-tracing-instance-id", group: gTracing, usage: "Distributed tracing instance ID, unique per member.", handling: noop, why: whyTracing, bind: anyString()},
		{name: "distributed-tracing-sampling-rate", group: gTracing, def: "0", usage: "Number of samples to collect per million spans.", handling: noop, why: whyTracing, bind: anyInt()},

		// Features.
		{name: "corrupt-check-time", group: gFeatures, def: "0s", usage: "Duration between cluster corruption check passes.", handling: noop, why: "corruption checks are not implemented yet", bind: anyDuration()},
		{name: "compact-hash-check-time", group: gFeatures, def: "1m", usage: "Duration between leader checks of followers' compaction hashes.", handling: noop, why: "compaction hash checks are not implemented yet", bind: anyDuration()},
		{name: "compaction-batch-limit", group: gFeatures, def: "0", helpDef: "1000", usage: "Maximum revisions deleted in each compaction batch.", handling: noop, why: "Ordo compacts with its own batching", bind: anyInt()},
		{name: "compaction-sleep-interval", group: gFeatures, def: "0s", usage: "Sleep interval between compaction batches.", handling: noop, why: "Ordo compacts with its own batching", bind: anyDuration()},
		{name: "watch-progress-notify-interval", group: gFeatures, def: "10m", usage: "Duration of periodic watch progress notifications.", bind: durationVal{&c.WatchProgressNotifyInterval}},
		{name: "watch-buffer-bytes", group: gFeatures, def: "67108864", usage: "Ordo only: memory kept for recent watch events; watchers further behind catch up from storage.", bind: int64Val{&c.WatchBufferBytes}},
		{name: "disk-reserve-bytes", group: gFeatures, def: "335544320", usage: "Ordo only: free space in bytes kept on the data dir's filesystem; a write that would leave less is refused with NOSPACE and raises the NOSPACE alarm. 0 turns the check off (a full disk then stops the member).", bind: int64Val{&c.DiskReserveBytes}},
		{name: "skip-startup-verify", group: gFeatures, def: "false", usage: "Ordo only: skip the startup pass that reads every block of the data dir to verify its checksums (it costs a sequential read of the whole store); Ordo's own consistency checks still run.", bind: boolVal{&c.SkipStartupVerify}},
		{name: "warning-apply-duration", group: gFeatures, def: "100ms", usage: "Log a warning when applying a request takes longer than this.", bind: durationVal{&c.WarningApplyDuration}},
		{name: "downgrade-check-time", group: gFeatures, def: "5s", usage: "Duration between two downgrade status checks.", handling: noop, why: "downgrades are not supported", bind: anyDuration()},
		{name: "bootstrap-defrag-threshold-megabytes", group: gFeatures, def: "0", usage: "Defragment the backend at boot if it would free at least this many megabytes.", handling: noop, why: whyBolt, bind: anyUint()},
		{name: "max-learners", group: gFeatures, def: "1", usage: "Maximum number of learner members allowed in the cluster membership.", bind: intVal{&c.MaxLearners}},
		{name: "snapshot-catchup-entries", group: gFeatures, def: strconv.Itoa(DefaultSnapshotCatchUp), usage: "Number of entries kept for a slow follower to catch up after compacting the raft log.", bind: uint64Val{&c.SnapshotCatchUpEntries}},

		// Unsafe.
		{name: "force-new-cluster", group: gUnsafe, def: "false", usage: "Force to create a new one-member cluster.", bind: boolVal{&c.ForceNewCluster}},
		{name: "unsafe-no-fsync", group: gUnsafe, def: "false", usage: "Disables fsync, unsafe, will cause data loss.", handling: unsupported, why: "Ordo always syncs its writes", bind: anyBool()},

		// Command-line only.
		{name: "config-file", group: gLegacy, yaml: "-", usage: "Path to the server configuration file.", bind: stringVal{configFile}},
		{name: "version", group: gLegacy, yaml: "-", def: "false", usage: "Print the version and exit.", bind: boolVal{version}},

		// Flags etcd has long ignored; etcd still accepts them, and so does Ordo.
		legacyFlag("cluster-active-size"), legacyFlag("cluster-remove-delay"), legacyFlag("cluster-sync-interval"),
		legacyFlag("config"), legacyFlag("force"), legacyFlag("max-result-buffer"), legacyFlag("max-retry-attempts"),
		legacyFlag("peer-heartbeat-interval"), legacyFlag("peer-election-timeout"), legacyFlag("retry-interval"),
		legacyFlag("snapshot"), legacyFlag("v"), legacyFlag("vv"), legacyFlag("test.coverprofile"), legacyFlag("test.outputdir"),
	}
}

func legacyFlag(name string) *flagSpec {
	return &flagSpec{name: name, group: gLegacy, yaml: "-", handling: legacy, bind: ignoredVal{}}
}

// newFlagTable builds the table bound to c and sets every flag to its default.
func newFlagTable(c *Config, configFile *string, version *bool) (*flagTable, error) {
	t := &flagTable{byName: map[string]*flagSpec{}, byYAML: map[string]*flagSpec{}}
	for _, s := range specsFor(c, configFile, version) {
		if _, dup := t.byName[s.name]; dup {
			return nil, fmt.Errorf("internal error: flag %q defined twice", s.name)
		}
		if err := s.bind.set(s.def); err != nil {
			return nil, fmt.Errorf("internal error: default %q of --%s: %w", s.def, s.name, err)
		}
		s.defCanon = s.bind.String()
		t.specs = append(t.specs, s)
		t.byName[s.name] = s
		if k := s.yamlKey(); k != "" {
			t.byYAML[k] = s
		}
	}
	return t, nil
}

// knownFeatureGates are etcd v3.7's server feature gates, plus its two special gates.
var knownFeatureGates = []string{
	"AllAlpha", "AllBeta",
	"CompactHashCheck", "FastLeaseKeepAlive", "InitialCorruptCheck", "LeaseCheckpoint",
	"LeaseCheckpointPersist", "PriorityRequest", "SetMemberLocalAddr", "StopGRPCServiceOnDefrag",
	"TxnModeWriteWithSharedBuffer",
}

// featureGatesVal parses etcd's --feature-gates syntax: "Name=bool,Name=bool".
type featureGatesVal struct{ p *map[string]bool }

func (v featureGatesVal) set(s string) error {
	m := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok {
			return fmt.Errorf("missing bool value for %s", k)
		}
		b, err := strconv.ParseBool(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("invalid value of %s=%s", k, strings.TrimSpace(val))
		}
		if !slices.Contains(knownFeatureGates, k) {
			return fmt.Errorf("unrecognized feature gate: %s", k)
		}
		m[k] = b
	}
	*v.p = m
	return nil
}

func (v featureGatesVal) String() string {
	var parts []string
	for _, k := range knownFeatureGates {
		if b, ok := (*v.p)[k]; ok {
			parts = append(parts, k+"="+strconv.FormatBool(b))
		}
	}
	return strings.Join(parts, ",")
}
