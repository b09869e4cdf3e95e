package disk

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/ordo-db/ordo/internal/testcluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

// mountTmpfs mounts a tmpfs of size bytes in a temp dir, or skips the test when that is not
// permitted. It is unmounted when the test ends.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root and CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestDiskFull fills the filesystem of a member's data dir with the workload itself: writes are
// refused with etcd's NOSPACE error once less than the reserve is free, the NOSPACE alarm is
// raised, acknowledged writes stay readable; then a filler file takes the rest of the space.
// After the filler is deleted, the member restarted and the alarm disarmed, every acknowledged
// write is there and writes work again.
func TestDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, 800<<20)
	dataDir := filepath.Join(mnt, "data")
	c := testcluster.New(t, 1, testcluster.Options{Process: true, Quiet: true, Args: []string{"--data-dir", dataDir}})
	m := c.Members[0]
	cli := c.Client()

	// Incompressible values: Pebble compresses blocks, and a repeated byte would take no space.
	raw := make([]byte, 1<<20)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	val := string(raw)
	var acked []string
	var err error
	for i := 0; i < 600; i++ {
		key := fmt.Sprintf("k%04d", i)
		if _, err = cli.Put(ctx(t), key, val); err != nil {
			break
		}
		acked = append(acked, key)
	}
	if !testcluster.IsErr(err, rpctypes.ErrGRPCNoSpace) {
		t.Fatalf("put on a full disk: %v, want %v", err, rpctypes.ErrGRPCNoSpace)
	}
	t.Logf("%d puts of 1 MiB acknowledged before NOSPACE", len(acked))
	alarms, err := cli.AlarmList(ctx(t))
	if err != nil || len(alarms.Alarms) != 1 || alarms.Alarms[0].Alarm.String() != "NOSPACE" {
		t.Fatalf("alarm list = %v, %v; want one NOSPACE alarm", alarms, err)
	}
	checkAcked(t, cli, acked)

	// Take the rest of the space.
	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	_, err = cli.Put(ctx(t), "more", "x")
	if err == nil {
		t.Fatal("put succeeded on a full disk")
	}
	t.Logf("put with the disk full: %v", err)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if err := m.Restart(); err != nil {
		t.Fatalf("restart after freeing space: %v", err)
	}
	cli = c.Client()
	checkAcked(t, cli, acked)
	// Still refused: the alarm is replicated state and survives the restart.
	_, err = cli.Put(ctx(t), "more", "x")
	if !testcluster.IsErr(err, rpctypes.ErrGRPCNoSpace) {
		t.Fatalf("put before disarm: %v, want %v", err, rpctypes.ErrGRPCNoSpace)
	}
	// Free space as an operator would, then disarm.
	if _, err := cli.Delete(ctx(t), "k", clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := cli.AlarmDisarm(ctx(t), &clientv3.AlarmMember{}); err != nil {
		t.Fatalf("disarm: %v", err)
	}
	if _, err := cli.Put(ctx(t), "more", "x"); err != nil {
		t.Fatalf("put after disarm: %v", err)
	}
}

// fill writes a file at path until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatalf("fill: %v", err)
		}
	}
}

func checkAcked(t *testing.T, cli *clientv3.Client, acked []string) {
	t.Helper()
	resp, err := cli.Get(ctx(t), "k", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if len(resp.Kvs) != len(acked) {
		t.Fatalf("%d keys present, %d acknowledged", len(resp.Kvs), len(acked))
	}
	for i, kv := range resp.Kvs {
		if string(kv.Key) != acked[i] {
			t.Fatalf("key %d = %q, want %q", i, kv.Key, acked[i])
		}
	}
}

// TestDamagedDataDirExits starts a member on a data dir whose Pebble OPTIONS file was cut in
// half and on one whose WAL has a flipped bit: the process must exit non-zero with an error
// naming the data dir, without serving.
func TestDamagedDataDirExits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, db string)
	}{
		{"OPTIONS truncated", func(t *testing.T, db string) {
			p := newest(t, db, "OPTIONS-")
			info, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, info.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"sstable bit flip", func(t *testing.T, db string) {
			p := newest(t, db, ".sst")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/3] ^= 0x01
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testcluster.New(t, 1, testcluster.Options{Process: true, Quiet: true})
			m := c.Members[0]
			cli := c.Client()
			// Enough data for Pebble to flush sstables (64 MiB memtable).
			val := strings.Repeat("v", 1<<20)
			for i := 0; i < 80; i++ {
				if _, err := cli.Put(ctx(t), fmt.Sprintf("k%03d", i), val); err != nil {
					t.Fatalf("put: %v", err)
				}
			}
			m.Stop()
			tc.damage(t, filepath.Join(m.DataDir, "db"))

			cmd := exec.Command(testcluster.Binary(t),
				"--name", m.Name, "--data-dir", m.DataDir,
				"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
				"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
				"--initial-cluster", m.Name+"="+m.PeerURL)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("member on a damaged data dir still running after 30s:\n%s", stderr.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("exit = %v, want non-zero\n%s", err, stderr.String())
			}
			out := stderr.String()
			if !strings.Contains(out, "is damaged") || !strings.Contains(out, m.DataDir) || strings.Contains(out, "ready to serve") {
				t.Fatalf("log of a member on a damaged data dir:\n%s", out)
			}
		})
	}
}

// newest returns the file in dir whose name contains part and sorts last.
func newest(t *testing.T, dir, part string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := ""
	for _, e := range ents {
		if strings.Contains(e.Name(), part) && e.Name() > out {
			out = e.Name()
		}
	}
	if out == "" {
		t.Fatalf("no %s file in %s", part, dir)
	}
	return filepath.Join(dir, out)
}
