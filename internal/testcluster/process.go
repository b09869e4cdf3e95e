package testcluster

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds the ordo binary once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// binary builds the ordo binary once per test process; unlike Binary it may run on any
// goroutine.
func binary() (string, error) {
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		// One binary directory per checkout, reused by every test process.
		sum := sha256.Sum256([]byte(root))
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("ordo-test-bin-%x", sum[:6]))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			buildErr = fmt.Errorf("binary directory: %w", err)
			return
		}
		buildPath = filepath.Join(dir, "ordo")
		// Build to a private name and rename, so concurrent test processes never run a
		// half-written binary.
		tmp := fmt.Sprintf("%s.%d", buildPath, os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, "./cmd/ordo")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build ordo: %v\n%s", err, b)
			return
		}
		if err := os.Rename(tmp, buildPath); err != nil {
			buildErr = fmt.Errorf("install ordo binary: %w", err)
		}
	})
	return buildPath, buildErr
}

// process is a member running as its own ordo process.
type process struct {
	cmd    *exec.Cmd
	ready  chan struct{}
	exited chan struct{}
	err    error
}

func startProcess(t testing.TB, name string, args []string, quiet bool, logPath string) (*process, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	var logFile *os.File
	if logPath != "" {
		// Appended to across restarts, so one file tells a member's whole story.
		if logFile, err = os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return nil, fmt.Errorf("member log: %w", err)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "ETCD_LOG_LEVEL=info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			_ = logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, ready: make(chan struct{}), exited: make(chan struct{})}
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		if logFile != nil {
			defer logFile.Close()
		}
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		readyOnce := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			if logFile != nil {
				_, _ = logFile.WriteString(line + "\n")
			}
			if strings.Contains(line, "ready to serve client requests") {
				readyOnce.Do(func() { close(p.ready) })
			}
			if !quiet && (strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"level":"warn"`) || strings.Contains(line, "panic")) {
				t.Logf("%s: %s", name, line)
			}
		}
	}()
	go func() {
		<-scanDone
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// signal sends sig to the process unless it has exited.
func (p *process) signal(sig syscall.Signal) error {
	select {
	case <-p.exited:
		return fmt.Errorf("process %d exited: %v", p.cmd.Process.Pid, p.err)
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to process %d: %w", sig, p.cmd.Process.Pid, err)
	}
	return nil
}

// stop ends the process with SIGTERM, and SIGKILL if it has not exited after 10 s. A
// paused (SIGSTOPped) process is continued first: a stopped process does not handle
// SIGTERM until it runs again.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

// kill ends the process with SIGKILL, which also ends a paused process.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}
