package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/logutil"
)

// Bounds of --bcrypt-cost (golang.org/x/crypto/bcrypt's MinCost, MaxCost and DefaultCost).
const (
	minBcryptCost     = 4
	maxBcryptCost     = 31
	defaultBcryptCost = 10
)

// finish validates cfg, fills in derived defaults (data dir, initial cluster) and parses the
// initial cluster. It is the one place where a loaded configuration is checked.
func finish(c *Config, lg *zap.Logger) error {
	if err := c.validate(lg); err != nil {
		return err
	}

	if c.DataDir == "" {
		c.DataDir = c.Name + DefaultDataDirSuffix
		lg.Warn("'data-dir' was empty; using default", zap.String("data-dir", c.DataDir))
	}
	// Like etcd, --name alone (without --initial-cluster) makes a one-member cluster of this name.
	if c.Name != DefaultName && c.InitialCluster == DefaultInitialCluster {
		c.InitialCluster = initialClusterFromName(c.Name, c.InitialAdvertisePeerURLs)
	}
	if c.SnapshotCount == 0 {
		lg.Info("updating snapshot-count to default", zap.Uint64("given-snapshot-count", 0), zap.Uint64("updated-snapshot-count", DefaultSnapshotCount))
		c.SnapshotCount = DefaultSnapshotCount
	}
	if c.SnapshotCatchUpEntries == 0 {
		lg.Info("updating snapshot catch-up entries to default", zap.Uint64("given-snapshot-catchup-entries", 0), zap.Uint64("updated-snapshot-catchup-entries", DefaultSnapshotCatchUp))
		c.SnapshotCatchUpEntries = DefaultSnapshotCatchUp
	}
	if c.BcryptCost < minBcryptCost || c.BcryptCost > maxBcryptCost {
		lg.Warn("invalid bcrypt-cost, using default", zap.Uint("given-bcrypt-cost", c.BcryptCost), zap.Int("default-bcrypt-cost", defaultBcryptCost))
		c.BcryptCost = defaultBcryptCost
	}

	m, err := ParseInitialCluster(c.InitialCluster)
	if err != nil {
		return fmt.Errorf("invalid --initial-cluster %q: %w", c.InitialCluster, err)
	}
	c.InitialClusterMap = m

	// The initial cluster only matters when the member has no data yet; a restarted member
	// ignores it, as etcd does.
	hasData, err := dirHasData(c.DataDir)
	if err != nil {
		return err
	}
	if !hasData {
		if err := c.VerifyBootstrap(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validate(lg *zap.Logger) error {
	switch c.Logger {
	case "zap":
	case "capnslog":
		return errors.New("--logger=capnslog is removed in v3.5")
	default:
		return fmt.Errorf("unknown logger option %q", c.Logger)
	}
	if len(c.LogOutputs) == 0 {
		c.LogOutputs = []string{logutil.OutputDefault}
	}
	if err := logutil.CheckOutputs(c.LogOutputs); err != nil {
		return fmt.Errorf("invalid --log-outputs: %w", err)
	}
	if _, err := logutil.ParseLevel(c.LogLevel); err != nil {
		return fmt.Errorf("invalid --log-level: %w", err)
	}
	if err := logutil.CheckFormat(c.LogFormat); err != nil {
		return fmt.Errorf("invalid --log-format: %w", err)
	}

	for _, f := range []struct {
		flag string
		urls []url.URL
	}{{"listen-peer-urls", c.ListenPeerURLs}, {"listen-client-urls", c.ListenClientURLs}} {
		if len(f.urls) == 0 {
			return fmt.Errorf("--%s must not be empty", f.flag)
		}
		if err := checkBindURLs(f.flag, f.urls); err != nil {
			return err
		}
	}
	if err := checkBindURLs("listen-metrics-urls", c.ListenMetricsURLs); err != nil {
		return err
	}
	if len(c.InitialAdvertisePeerURLs) == 0 {
		return errors.New("--initial-advertise-peer-urls must not be empty")
	}
	if err := checkHostURLs(c.InitialAdvertisePeerURLs); err != nil {
		return fmt.Errorf(`--initial-advertise-peer-urls %q must be "host:port" (%w)`, urlsString(c.InitialAdvertisePeerURLs), err)
	}
	if err := checkHostURLs(c.AdvertiseClientURLs); err != nil {
		return fmt.Errorf(`--advertise-client-urls %q must be in the format "host:port", "unix:/path/to/socket" or "unixs:/path/to/socket" (%w)`, urlsString(c.AdvertiseClientURLs), err)
	}

	switch c.InitialClusterState {
	case ClusterStateNew, ClusterStateExisting:
	default:
		return fmt.Errorf("unexpected clusterState %q", c.InitialClusterState)
	}

	if c.HeartbeatInterval <= 0 {
		return fmt.Errorf("--heartbeat-interval must be >0 (set to %dms)", c.HeartbeatInterval.Milliseconds())
	}
	if c.ElectionTimeout <= 0 {
		return fmt.Errorf("--election-timeout must be >0 (set to %dms)", c.ElectionTimeout.Milliseconds())
	}
	if 5*c.HeartbeatInterval > c.ElectionTimeout {
		return fmt.Errorf("--election-timeout[%vms] should be at least as 5 times as --heartbeat-interval[%vms]", c.ElectionTimeout.Milliseconds(), c.HeartbeatInterval.Milliseconds())
	}
	if c.ElectionTimeout > MaxElectionTimeout {
		return fmt.Errorf("--election-timeout[%vms] is too long, and should be set less than %vms", c.ElectionTimeout.Milliseconds(), MaxElectionTimeout.Milliseconds())
	}

	if len(c.AdvertiseClientURLs) == 0 {
		return ErrUnsetAdvertiseClientURLs
	}

	switch c.AutoCompactionMode {
	case CompactionModePeriodic:
		if _, err := c.AutoCompactionPeriod(); err != nil {
			return err
		}
	case CompactionModeRevision:
		if _, err := c.AutoCompactionRevisions(); err != nil {
			return err
		}
	case "":
		return errors.New("undefined auto-compaction-mode")
	default:
		return fmt.Errorf("unknown auto-compaction-mode %q", c.AutoCompactionMode)
	}

	// The JWT options (key files, signing method) are checked when the member opens its auth
	// store, before it serves anything.
	if kind, _, _ := strings.Cut(c.AuthToken, ","); kind != "simple" && kind != "jwt" {
		return fmt.Errorf("invalid --auth-token %q: unknown token type %q (supported: simple, jwt)", c.AuthToken, kind)
	}
	if c.MaxLearners < 1 {
		return fmt.Errorf("--max-learners must be >0 (set to %d)", c.MaxLearners)
	}
	if c.DiskReserveBytes < 0 {
		return fmt.Errorf("--disk-reserve-bytes must be >=0 (set to %d)", c.DiskReserveBytes)
	}
	if c.TLSMinVersion == "TLS1.3" && c.TLSMaxVersion == "TLS1.2" {
		return fmt.Errorf("min version (%s) is greater than max version (%s)", c.TLSMinVersion, c.TLSMaxVersion)
	}

	if c.Name == DefaultName {
		lg.Warn("it isn't recommended to use default name, please set a value for --name. "+
			"Note that etcd might run into issue when multiple members have the same default name",
			zap.String("name", c.Name))
	}
	return nil
}

// checkBindURLs checks listen URLs: hosts must be IPs or "localhost", and TLS schemes are
// rejected because Ordo does not implement TLS yet.
func checkBindURLs(flagName string, urls []url.URL) error {
	for _, u := range urls {
		switch u.Scheme {
		case "https", "unixs":
			return fmt.Errorf("--%s=%q is not supported by Ordo: %s (scheme %q needs TLS)", flagName, u.String(), whyTLS, u.Scheme)
		case "unix":
			continue
		}
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			return fmt.Errorf("--%s: %w", flagName, err)
		}
		if host == "localhost" {
			continue
		}
		if net.ParseIP(host) == nil {
			return fmt.Errorf("--%s: expected IP in URL for binding (%s)", flagName, u.String())
		}
	}
	return nil
}

func checkHostURLs(urls []url.URL) error {
	for _, u := range urls {
		if u.Scheme == "unix" || u.Scheme == "unixs" {
			continue
		}
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			return err
		}
		if host == "" {
			return fmt.Errorf("unexpected empty host (%s)", u.String())
		}
	}
	return nil
}

func initialClusterFromName(name string, peers []url.URL) string {
	parts := make([]string, 0, len(peers))
	for _, u := range peers {
		parts = append(parts, name+"="+u.String())
	}
	return strings.Join(parts, ",")
}

// ParseInitialCluster parses etcd's --initial-cluster syntax, "name=url,name=url,...", where a
// name may appear several times to give a member several peer URLs.
func ParseInitialCluster(s string) (map[string][]url.URL, error) {
	raw := map[string][]string{}
	for _, item := range strings.Split(s, ",") {
		if item == "" {
			continue
		}
		name, u, _ := strings.Cut(item, "=")
		raw[name] = append(raw[name], u)
	}
	out := make(map[string][]url.URL, len(raw))
	for name, us := range raw {
		parsed, err := ParseURLs(us)
		if err != nil {
			return nil, fmt.Errorf("member %q: %w", name, err)
		}
		out[name] = parsed
	}
	return out, nil
}

// VerifyBootstrap checks the initial cluster against this member the way etcd does before
// bootstrapping: the member's name must be in it; when starting a new cluster, its peer URLs
// there must match --initial-advertise-peer-urls; and no peer URL may appear twice. Load runs it
// when the data directory holds no data yet (a restarted member ignores the initial cluster).
func (c *Config) VerifyBootstrap() error {
	if len(c.InitialClusterMap) == 0 {
		return errors.New("initial cluster unset and no discovery endpoints found")
	}
	if _, ok := c.InitialClusterMap[c.Name]; !ok {
		return fmt.Errorf("couldn't find local name %q in the initial cluster configuration", c.Name)
	}
	if c.IsNewCluster() {
		if err := c.advertiseMatchesCluster(); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, name := range sortedKeys(c.InitialClusterMap) {
		for _, u := range c.InitialClusterMap[name] {
			if seen[u.String()] {
				return fmt.Errorf("initial cluster %s has duplicate url", initialClusterString(c.InitialClusterMap))
			}
			seen[u.String()] = true
		}
	}
	return nil
}

func (c *Config) advertiseMatchesCluster() error {
	inCluster := c.InitialClusterMap[c.Name]
	if sameURLs(inCluster, c.InitialAdvertisePeerURLs) {
		return nil
	}
	var missing []string
	for _, u := range inCluster {
		if !containsURL(c.InitialAdvertisePeerURLs, u) {
			missing = append(missing, c.Name+"="+u.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("--initial-cluster has %s but missing from --initial-advertise-peer-urls=%s",
			strings.Join(missing, ","), urlsString(c.InitialAdvertisePeerURLs))
	}
	for _, u := range c.InitialAdvertisePeerURLs {
		if !containsURL(inCluster, u) {
			missing = append(missing, u.String())
		}
	}
	own := map[string][]url.URL{c.Name: c.InitialAdvertisePeerURLs}
	if len(missing) > 0 {
		return fmt.Errorf("--initial-advertise-peer-urls has %s but missing from --initial-cluster=%s",
			strings.Join(missing, ","), initialClusterString(own))
	}
	return fmt.Errorf("failed to resolve %s to match --initial-cluster=%s", urlsString(c.InitialAdvertisePeerURLs), initialClusterString(own))
}

// sameURLs reports whether two URL lists name the same endpoints, either literally or once
// host names are resolved (etcd accepts "localhost" on one side and "127.0.0.1" on the other).
func sameURLs(a, b []url.URL) bool {
	if len(a) != len(b) {
		return false
	}
	as, bs := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		as[i], bs[i] = a[i].String(), b[i].String()
	}
	slices.Sort(as)
	slices.Sort(bs)
	if slices.Equal(as, bs) {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ra, err := resolveURLs(ctx, a)
	if err != nil {
		return false
	}
	rb, err := resolveURLs(ctx, b)
	if err != nil {
		return false
	}
	return slices.Equal(ra, rb)
}

// lookupHost resolves host names; a variable so tests can stub it.
var lookupHost = net.DefaultResolver.LookupHost

// resolveURLs maps each URL to "scheme://ip:port" using the first address of its host (sorted),
// and returns the sorted list.
func resolveURLs(ctx context.Context, us []url.URL) ([]string, error) {
	out := make([]string, 0, len(us))
	for _, u := range us {
		if u.Scheme == "unix" || u.Scheme == "unixs" {
			out = append(out, u.String())
			continue
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			return nil, err
		}
		ip := net.ParseIP(host)
		if ip == nil {
			addrs, err := lookupHost(ctx, host)
			if err != nil || len(addrs) == 0 {
				return nil, fmt.Errorf("resolving %q: %w", host, err)
			}
			slices.Sort(addrs)
			ip = net.ParseIP(addrs[0])
			for _, a := range addrs { // prefer IPv4 like most resolvers' first answer for localhost
				if p := net.ParseIP(a); p != nil && p.To4() != nil {
					ip = p
					break
				}
			}
		}
		out = append(out, u.Scheme+"://"+net.JoinHostPort(ip.String(), port))
	}
	slices.Sort(out)
	return out, nil
}

func containsURL(list []url.URL, u url.URL) bool {
	for _, e := range list {
		if e.String() == u.String() {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string][]url.URL) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// initialClusterString formats a cluster map in --initial-cluster syntax, sorted.
func initialClusterString(m map[string][]url.URL) string {
	var pairs []string
	for name, us := range m {
		for _, u := range us {
			pairs = append(pairs, name+"="+u.String())
		}
	}
	slices.Sort(pairs)
	return strings.Join(pairs, ",")
}

// dirHasData reports whether dir exists and has any entry.
func dirHasData(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading --data-dir %q: %w", dir, err)
	}
	return len(entries) > 0, nil
}
