// Command ordo runs an Ordo server, a drop-in replacement for etcd v3.7: it takes etcd's flags,
// ETCD_* environment variables and YAML configuration file. "ordo ctl ..." runs etcdctl.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"go.uber.org/zap"

	"github.com/ordo-db/ordo/internal/bench"
	"github.com/ordo-db/ordo/internal/config"
	"github.com/ordo-db/ordo/internal/logutil"
	"github.com/ordo-db/ordo/internal/server"
)

// Exit codes: 2 for a malformed command line, as etcd's flag parsing does, 1 for other failures.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// reserved are subcommand names kept for tools Ordo will ship later.
var reserved = map[string]bool{"snapshot": true, "migrate": true}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "ctl" {
		runCtl()
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "bench" {
		os.Exit(bench.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "check" {
		os.Exit(checkMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args, os.Environ(), os.Stdout, os.Stderr))
}

// run is the server entry point; args includes the program name.
func run(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) > 1 && reserved[args[1]] {
		fmt.Fprintf(stderr, "ordo %s: not implemented yet\n", args[1])
		return exitUsage
	}

	cfg, err := config.Load(args[1:], environ, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		if err := printHelp(stdout); err != nil {
			fmt.Fprintln(stderr, "ordo:", err)
			return exitError
		}
		return exitOK
	case errors.Is(err, config.ErrVersion):
		printVersion(stdout)
		return exitOK
	case err != nil:
		var ue *config.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "ordo: %v\nRun 'ordo --help' for usage.\n", err)
			return exitUsage
		}
		lg := logutil.NewWriterLogger(stderr, "info")
		lg.Warn("failed to verify flags", zap.Error(err))
		return exitError
	}

	lg, err := logutil.NewLoggerFormat(cfg.LogLevel, cfg.LogFormat, cfg.LogOutputs)
	if err != nil {
		fmt.Fprintln(stderr, "ordo: setting up logging:", err)
		return exitError
	}
	defer func() { _ = lg.Sync() }()

	lg.Info("Running: ", zap.Strings("args", args))
	lg.Info("starting Ordo server",
		zap.String("ordo-version", version),
		zap.String("etcd-version", etcdVersion()),
		zap.String("git-sha", gitCommit()),
		zap.String("go-version", runtime.Version()),
		zap.String("go-os", runtime.GOOS),
		zap.String("go-arch", runtime.GOARCH),
		zap.Int("max-cpu-set", runtime.GOMAXPROCS(0)),
		zap.Int("max-cpu-available", runtime.NumCPU()),
		zap.String("name", cfg.Name),
		zap.String("data-dir", cfg.DataDir),
		zap.Stringers("listen-client-urls", urlStringers(cfg.ListenClientURLs)),
		zap.Stringers("advertise-client-urls", urlStringers(cfg.AdvertiseClientURLs)),
		zap.Stringers("listen-peer-urls", urlStringers(cfg.ListenPeerURLs)),
		zap.Stringers("initial-advertise-peer-urls", urlStringers(cfg.InitialAdvertisePeerURLs)),
		zap.String("initial-cluster", cfg.InitialCluster),
		zap.String("initial-cluster-state", cfg.InitialClusterState),
		zap.String("initial-cluster-token", cfg.InitialClusterToken),
		zap.Bool("force-new-cluster", cfg.ForceNewCluster),
	)

	applyCgroupMemoryLimit(lg)

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)

	m, err := server.New(cfg, lg)
	if err != nil {
		lg.Error("failed to create server", zap.Error(err))
		return exitError
	}
	if err := m.Start(); err != nil {
		lg.Error("failed to start server", zap.Error(err))
		return exitError
	}

	select {
	case sig := <-sigc:
		lg.Info("received signal; shutting down", zap.String("signal", sig.String()))
	case <-m.Done():
	}
	m.Stop()
	if err := m.Err(); err != nil {
		lg.Error("server stopped with an error", zap.Error(err))
		return exitError
	}
	lg.Info("server stopped")
	return exitOK
}

func printHelp(w io.Writer) error {
	if _, err := io.WriteString(w, usageText); err != nil {
		return fmt.Errorf("writing help: %w", err)
	}
	return config.PrintFlags(w)
}

const usageText = `Usage:

  ordo [flags]
    Start an Ordo server. Ordo takes etcd v3.7's flags, ETCD_* environment variables and
    YAML configuration file, and serves etcd's v3 gRPC API.

  ordo --version
    Show the version of Ordo and of the etcd release it is compatible with.

  ordo -h | --help
    Show the help information about Ordo.

  ordo --config-file
    Path to the server configuration file. Note that if a configuration file is provided,
    other command line flags and environment variables will be ignored. Duration-typed keys
    take integer nanoseconds in the file, as in etcd.

  ordo ctl [etcdctl flags] <command> [args]
    Run etcdctl, etcd's command-line client, unchanged (ETCDCTL_* variables apply).
    For example: ordo ctl put foo bar; ordo ctl get foo.
`
