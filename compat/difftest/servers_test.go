package difftest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// binaries returns the Ordo and etcd binaries to compare: ORDO_BIN and ETCD_BIN when set,
// otherwise both are built once per test binary into a temporary directory.
func binaries(t *testing.T) (ordoBin, etcdBin string) {
	t.Helper()
	binOnce.Do(func() {
		ordoBin, etcdBin = os.Getenv("ORDO_BIN"), os.Getenv("ETCD_BIN")
		if ordoBin != "" && etcdBin != "" {
			bins = [2]string{ordoBin, etcdBin}
			return
		}
		dir, err := os.MkdirTemp("", "ordo-difftest-bin")
		if err != nil {
			binErr = fmt.Errorf("binary dir: %w", err)
			return
		}
		binDir = dir
		if ordoBin == "" {
			ordoBin = filepath.Join(dir, "ordo")
			if err := goBuild("../..", ordoBin, "./cmd/ordo"); err != nil {
				binErr = err
				return
			}
		}
		if etcdBin == "" {
			etcdBin = filepath.Join(dir, "etcd")
			if err := goBuild("../etcd", etcdBin, "."); err != nil {
				binErr = err
				return
			}
		}
		bins = [2]string{ordoBin, etcdBin}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return bins[0], bins[1]
}

var (
	binOnce sync.Once
	bins    [2]string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func goBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s in %s: %w\n%s", pkg, dir, err, stderr.String())
	}
	return nil
}

// server is one single-member cluster running as a process.
type server struct {
	name    string
	url     string // the client URL, for HTTP requests
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	conn    *grpc.ClientConn
	kv      pb.KVClient
	lease   pb.LeaseClient
	watch   pb.WatchClient
}

// startServer starts bin as a single-member cluster on free loopback ports in a temporary data
// dir and waits until it answers a linearizable read. The server is stopped when the test ends.
func startServer(t *testing.T, name, bin string) *server {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := tryStart(t, name, bin)
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		lastErr = err
	}
	t.Fatalf("start %s: %v", name, lastErr)
	return nil
}

func tryStart(t *testing.T, name, bin string) (*server, error) {
	dir := t.TempDir()
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--name", "diff",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "diff="+peer,
		"--initial-cluster-state", "new",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &server{name: name, url: client, cmd: cmd, exited: make(chan struct{}), logPath: logPath}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", ports[0]),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("dial %s: %w", name, err)
	}
	s.conn = conn
	s.kv, s.lease, s.watch = pb.NewKVClient(conn), pb.NewLeaseClient(conn), pb.NewWatchClient(conn)
	if err := s.waitReady(30 * time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("%s not ready: %w\n%s", name, err, s.logTail())
	}
	return s, nil
}

func (s *server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-s.exited:
			return errors.New("process exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := s.kv.Range(ctx, &pb.RangeRequest{Key: []byte("difftest-ready")}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within %v: %w", timeout, err)
		}
	}
}

func (s *server) stop() {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

func (s *server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// freePorts reserves n loopback ports and releases them for the server to bind; a lost race is
// handled by startServer trying again.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
