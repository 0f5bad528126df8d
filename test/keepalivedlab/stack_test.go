package keepalivedlab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"halb/test/support"
)

// A keepalived child left running by a crash is killed through its PID
// file, so the next start is not refused; a PID file naming another
// program (a reused PID) leaves that program alone.
func TestReapPIDFiles(t *testing.T) {
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	// A stand-in whose process name is "keepalived".
	fake := filepath.Join(dir, "keepalived")
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fake, b, 0o755); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(fake, "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	t.Cleanup(func() { _ = child.Process.Kill() })
	other := exec.Command(sleep, "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })

	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	paths := []string{
		write("keepalived-vrrp.pid", fmt.Sprintf("%d\n", child.Process.Pid)),
		write("keepalived.pid", fmt.Sprintf("%d\n", other.Process.Pid)),
		write("keepalived-checkers.pid", "not a pid"),
		filepath.Join(dir, "missing.pid"),
	}
	// The child must have exec'd before its name is "keepalived".
	if !support.Eventually(5*time.Second, func() bool { return isKeepalived(child.Process.Pid) }) {
		t.Fatal("the stand-in never showed up as keepalived")
	}
	if err := reapPIDFiles(paths, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err == nil {
			t.Error("the leftover keepalived exited cleanly instead of being killed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the leftover keepalived was not killed")
	}
	if err := syscall.Kill(other.Process.Pid, 0); err != nil {
		t.Fatalf("a process that is not keepalived was killed: %v", err)
	}
	for _, p := range paths[:3] {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s not removed: %v", filepath.Base(p), err)
		}
	}
}
