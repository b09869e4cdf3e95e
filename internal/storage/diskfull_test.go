package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

const diskFullChildEnv = "ORDO_STORAGE_DISKFULL_CHILD"

// diskFullAt is the raft index whose Save finds the disk full.
const diskFullAt = 40

// TestDiskFullStopsMember runs an engine whose filesystem starts failing WAL writes with
// ENOSPC in a child process (the failure stops the process: Pebble cannot go on after a
// failed WAL write, see pebbleLogger). It checks that the child stops with a non-zero exit and
// a log line naming the data dir and the cause, that it acknowledged nothing after the
// failure, and that everything it acknowledged before is intact when the data dir is opened
// again.
func TestDiskFullStopsMember(t *testing.T) {
	if dir := os.Getenv(diskFullChildEnv); dir != "" {
		diskFullChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskFullStopsMember$", "-test.count=1")
	cmd.Env = append(os.Environ(), diskFullChildEnv+"="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("child: %v, want a non-zero exit\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if exit.ExitCode() == 3 {
		t.Fatalf("child: Save reported success after the disk filled\n%s", stdout.String())
	}
	for _, want := range []string{"the data dir cannot be written", dir, "no space left on device"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("child's log does not mention %q:\n%s", want, stderr.String())
		}
	}
	acked := 0
	for _, line := range strings.Split(stdout.String(), "\n") {
		if n, ok := strings.CutPrefix(line, "acked "); ok {
			acked, _ = strconv.Atoi(n)
		}
	}
	if acked != diskFullAt-1 {
		t.Fatalf("child acknowledged up to %d, want %d\n%s", acked, diskFullAt-1, stdout.String())
	}

	e, err := Open(dir, zap.NewNop())
	if err != nil {
		t.Fatalf("reopen after the disk filled: %v", err)
	}
	defer func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	l := mustOpenRaftLog(t, e)
	last, _ := l.LastIndex()
	if last < uint64(acked) {
		t.Fatalf("last index after reopen = %d, acknowledged %d", last, acked)
	}
	ents, err := l.Entries(1, uint64(acked)+1, 1<<30)
	if err != nil {
		t.Fatalf("entries: %v", err)
	}
	for i, ent := range ents {
		if ent.GetIndex() != uint64(i+1) || !bytes.Equal(ent.GetData(), diskFullData(ent.GetIndex())) {
			t.Fatalf("entry %d after reopen = %v", i+1, ent)
		}
	}
	if hs := l.HardState(); hs.GetCommit() < uint64(acked) {
		t.Fatalf("hard state after reopen = %v, want commit >= %d", hs, acked)
	}
}

func diskFullData(i uint64) []byte { return bytes.Repeat([]byte{byte(i)}, 4096) }

// diskFullChild appends entries one synced Save at a time and reports each acknowledgement on
// stdout; from diskFullAt on every WAL write fails with ENOSPC.
func diskFullChild(dir string) {
	var full atomic.Bool
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !full.Load() || !strings.HasSuffix(op.Path, ".log") {
			return nil
		}
		switch op.Kind {
		case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFileSync, errorfs.OpFileSyncData,
			errorfs.OpFileSyncTo, errorfs.OpFileFlush, errorfs.OpFilePreallocate:
			return fmt.Errorf("inject: %w", syscall.ENOSPC)
		}
		return nil
	})
	lg, err := zap.NewProduction()
	if err != nil {
		fmt.Println("logger:", err)
		os.Exit(2)
	}
	e, err := OpenWithOptions(dir, lg, Options{FS: errorfs.Wrap(vfs.Default, inj)})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	l, err := OpenRaftLog(e)
	if err != nil {
		fmt.Println("open raft log:", err)
		os.Exit(2)
	}
	for i := uint64(1); i <= diskFullAt; i++ {
		if i == diskFullAt {
			full.Store(true)
		}
		hs := &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(i)}
		ent := &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1), Data: diskFullData(i)}
		if err := l.Save(hs, []*raftpb.Entry{ent}); err != nil {
			// Pebble may report the failure instead of stopping: that is fine as long as it
			// is reported. The member stops on any Save error (raftnode fails the node).
			fmt.Println("save failed:", err)
			os.Exit(4)
		}
		fmt.Printf("acked %d\n", i)
		if i == diskFullAt {
			os.Exit(3)
		}
	}
}
