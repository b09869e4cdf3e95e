package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/ordo-db/ordo/internal/check"
)

// checkMain runs `ordo check`: the checking workload against any etcd-API cluster. It exits 0
// when the run found nothing wrong, 1 when it found violations or could not decide (the
// linearizability search ran out of time), and 2 on bad usage or when the run could not be
// carried out.
func checkMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ordo check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := fs.String("endpoints", "127.0.0.1:2379", "comma-separated client endpoints of the cluster")
	var cfg check.Config
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long the workload runs")
	fs.IntVar(&cfg.Ops, "ops", 0, "stop after this many operations (0: no limit)")
	fs.IntVar(&cfg.Clients, "clients", 8, "concurrent clients")
	fs.IntVar(&cfg.Conns, "conns", 2, "client connections shared by the clients")
	fs.IntVar(&cfg.Keys, "keys", 8, "keys the clients contend on")
	fs.IntVar(&cfg.Watchers, "watchers", 4, "watchers started at random moments")
	fs.StringVar(&cfg.Prefix, "prefix", "/ordo-check/", "key prefix; each run writes under a fresh sub-prefix and deletes it at the end")
	fs.DurationVar(&cfg.OpTimeout, "op-timeout", 3*time.Second, "per-operation timeout (a write that times out has an unknown outcome)")
	fs.DurationVar(&cfg.CheckTimeout, "check-timeout", 2*time.Minute, "time allowed for the linearizability search")
	fs.DurationVar(&cfg.SettleTimeout, "settle-timeout", time.Minute, "time allowed after the workload to read the change log and let watchers catch up")
	fs.BoolVar(&cfg.Exclusive, "exclusive", false, "no other client writes to the cluster during the run (adds the contiguous-revision check)")
	fs.Int64Var(&cfg.Seed, "seed", 0, "workload seed (0: from the clock); the report prints it")
	fs.StringVar(&cfg.VisualizePath, "visualize", "", "write an HTML visualisation of the checked history to this file")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ordo check [flags]")
		fmt.Fprintln(stderr, "Runs a concurrent workload of puts, gets, transactions, deletes, leases and watches")
		fmt.Fprintln(stderr, "against an etcd-API cluster and checks linearizability, lost writes and watch order.")
		fmt.Fprintln(stderr, "Inject faults into the cluster while it runs; it must be whole again when the workload ends.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ordo check: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg.Endpoints = strings.Split(*endpoints, ",")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	fmt.Fprintf(stdout, "checking %s for %v with %d clients...\n", *endpoints, cfg.Duration, cfg.Clients)
	rep, err := check.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "ordo check:", err)
		return exitUsage
	}
	fmt.Fprint(stdout, rep)
	if !rep.OK() {
		if rep.ViolationCount() == 0 {
			fmt.Fprintln(stdout, "result: INCONCLUSIVE (the linearizability search ran out of time; raise --check-timeout or lower --duration)")
		} else {
			fmt.Fprintln(stdout, "result: FAIL")
		}
		return exitError
	}
	fmt.Fprintln(stdout, "result: PASS")
	return exitOK
}
