// Package fault is Ordo's fault-injection suite. Each test runs a cluster of real member
// processes with every peer link routed through a controllable proxy, runs the checking
// workload of package check against it (puts, gets, transactions, deletes, leases and
// watches from concurrent clients), and meanwhile injects faults: SIGKILL and restart of the
// leader or a follower, SIGSTOP/SIGCONT, full and one-way partitions, delayed and lossy
// links, and the crash of every member at once. When the workload ends the cluster is made
// whole, and the run must show a linearizable history, no lost acknowledged write and
// watchers that saw every event in order.
//
// The default run is short. ORDO_LONG_TESTS=1 (or `make test-faults-long`) runs it for
// minutes; ORDO_FAULT_DURATION overrides the workload duration of each test, ORDO_FAULT_OPS
// its operation bound (50,000; 500,000 in long runs), ORDO_FAULT_SEED replays a seed, and ORDO_FAULTS="pause leader,kill leader" narrows a run to the named
// faults. The member logs of a failed run are kept, and the test prints where.
package fault
