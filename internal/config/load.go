package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/logutil"
)

// EnvPrefix is the prefix of the environment variables that set server flags, as in etcd.
const EnvPrefix = "ETCD"

// Load parses args (without the program name) and environ (os.Environ() form) and returns the
// validated configuration, or an error naming the bad flag or value.
//
// As in etcd, a flag given on the command line wins over the corresponding ETCD_* variable, but
// setting both is an error; unknown ETCD_* variables are warned about. With --config-file (or
// ETCD_CONFIG_FILE) the configuration comes from the YAML file alone and the other flags and
// environment variables are ignored. Warnings and informational messages are written to stderr
// as etcd-style JSON log lines.
//
// If --version was given Load returns ErrVersion; if -h/--help was given it returns flag.ErrHelp.
// Malformed command lines yield a *UsageError.
func Load(args []string, environ []string, stderr io.Writer) (*Config, error) {
	if stderr == nil {
		stderr = io.Discard
	}
	lg := logutil.NewWriterLogger(stderr, "info")
	l := &loader{lg: lg, env: envMap(environ), environ: environ}

	cfg, tbl, err := newDefaultConfig(&l.configFile, &l.version)
	if err != nil {
		return nil, err
	}
	fs := newFlagSet(tbl)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, flag.ErrHelp
		}
		return nil, &UsageError{Err: err}
	}
	if fs.NArg() != 0 {
		return nil, &UsageError{Err: fmt.Errorf("%q is not a valid flag", fs.Arg(0))}
	}
	if l.version {
		return nil, ErrVersion
	}

	if l.configFile == "" {
		l.configFile = l.env[EnvPrefix+"_CONFIG_FILE"]
	}
	if l.configFile != "" {
		// Flags and environment variables are ignored: start again from the defaults.
		path := l.configFile
		cfg, tbl, err = newDefaultConfig(new(string), new(bool))
		if err != nil {
			return nil, err
		}
		if err := l.fromFile(cfg, tbl, path); err != nil {
			return nil, err
		}
		cfg.ConfigFile = path
		lg.Info("loaded server configuration, other configuration command line flags and environment variables will be ignored if provided",
			zap.String("path", path))
	} else if err := l.fromCommandLine(cfg, tbl, fs); err != nil {
		return nil, err
	}

	if err := l.checkHandling(cfg, tbl); err != nil {
		return nil, err
	}
	if err := finish(cfg, lg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// loader carries the state of one Load call.
type loader struct {
	lg         *zap.Logger
	env        map[string]string
	environ    []string
	configFile string
	version    bool
}

func newDefaultConfig(configFile *string, version *bool) (*Config, *flagTable, error) {
	cfg := &Config{}
	tbl, err := newFlagTable(cfg, configFile, version)
	if err != nil {
		return nil, nil, err
	}
	cfg.ExplicitlySet = map[string]bool{}
	return cfg, tbl, nil
}

// flagValue adapts a binder to flag.Value.
type flagValue struct{ b binder }

func (v flagValue) Set(s string) error { return v.b.set(s) }
func (v flagValue) String() string {
	if v.b == nil {
		return ""
	}
	return v.b.String()
}
func (v flagValue) IsBoolFlag() bool {
	b, ok := v.b.(boolBinder)
	return ok && b.isBool()
}

func newFlagSet(tbl *flagTable) *flag.FlagSet {
	fs := flag.NewFlagSet("ordo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, s := range tbl.specs {
		fs.Var(flagValue{s.bind}, s.name, s.usage)
	}
	return fs
}

// fromCommandLine applies ETCD_* variables to the flags not given on the command line.
func (l *loader) fromCommandLine(cfg *Config, tbl *flagTable, fs *flag.FlagSet) error {
	onCmdLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCmdLine[f.Name] = true })

	const verKey = EnvPrefix + "_VERSION"
	if v, ok := l.env[verKey]; ok && v != "" {
		l.lg.Warn("cannot set special environment variable", zap.String("key", verKey), zap.String("value", v))
	}

	used := map[string]bool{}
	for _, s := range tbl.specs {
		key := flagToEnv(s.name)
		if onCmdLine[s.name] || s.name == "version" {
			continue
		}
		val := l.env[key]
		if val == "" {
			continue
		}
		used[key] = true
		if err := fs.Set(s.name, val); err != nil {
			return &UsageError{Err: fmt.Errorf("invalid value %q for %s: %w", val, key, err)}
		}
		l.lg.Info("recognized and used environment variable", zap.String("variable-name", key), zap.String("variable-value", val))
	}

	for _, kv := range l.environ {
		key, _, _ := strings.Cut(kv, "=")
		if used[key] || key == verKey {
			continue
		}
		if s, ok := envToFlag(tbl, key); ok && onCmdLine[s.name] {
			return fmt.Errorf("conflicting environment variable %q is shadowed by corresponding command-line flag --%s (either unset environment variable or disable flag)", key, s.name)
		}
		if strings.HasPrefix(key, EnvPrefix+"_") {
			if _, ok := envToFlag(tbl, key); !ok {
				l.lg.Warn("unrecognized environment variable", zap.String("environment-variable", kv))
			}
		}
	}

	fs.Visit(func(f *flag.Flag) { cfg.ExplicitlySet[f.Name] = true })

	// etcd drops the default advertise-client-urls when only listen-client-urls is given.
	if cfg.ExplicitlySet["listen-client-urls"] && !cfg.ExplicitlySet["advertise-client-urls"] {
		cfg.AdvertiseClientURLs = nil
	}
	return nil
}

// checkHandling rejects unsupported flags set to non-default values and warns about no-op,
// legacy and deprecated ones.
func (l *loader) checkHandling(cfg *Config, tbl *flagTable) error {
	for _, s := range tbl.specs {
		if !cfg.ExplicitlySet[s.name] {
			continue
		}
		changed := s.bind.String() != s.defCanon
		switch s.handling {
		case unsupported:
			if changed {
				where := ""
				if cfg.ConfigFile != "" {
					where = fmt.Sprintf(" (config file key %q)", s.yamlKey())
				}
				return fmt.Errorf("--%s=%q%s is not supported by Ordo: %s", s.name, s.bind.String(), where, s.why)
			}
		case noop:
			if changed {
				l.lg.Warn("flag has no effect in Ordo; ignoring it", zap.String("flag-name", s.name), zap.String("reason", s.why))
			}
		case legacy:
			l.lg.Warn("flag is no longer supported - ignoring", zap.String("flag-name", s.name))
		}
		if s.deprecated != "" {
			l.lg.Warn(s.deprecated)
		}
	}
	if v := tbl.byName["discovery-fallback"]; v != nil && v.bind.String() == "proxy" {
		return fmt.Errorf("v2 proxy is deprecated, and --discovery-fallback can't be configured as %q", "proxy")
	}
	return nil
}

// flagToEnv converts a flag name to its environment variable: data-dir -> ETCD_DATA_DIR.
func flagToEnv(name string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func envToFlag(tbl *flagTable, key string) (*flagSpec, bool) {
	for _, s := range tbl.specs {
		if flagToEnv(s.name) == key {
			return s, true
		}
	}
	return nil, false
}

// envMap turns an os.Environ()-style list into a map; the first entry of a duplicated key wins,
// as with os.Getenv.
func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	}
	return m
}
