package cli

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"halb/test/support"
)

// buildHalb builds cmd/halb into a temporary directory.
func buildHalb(t *testing.T, dir string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build halb with")
	}
	bin := filepath.Join(dir, "halb")
	out, err := exec.Command(gobin, "build", "-o", bin, "halb/cmd/halb").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// onOpen calls opened as soon as some process opens path, seen through
// inotify, so a signal can land while halb is reading its config. It
// closes ready once it watches, and gives up after 10s or once exited is
// closed. It runs on its own goroutine, so it returns its error.
func onOpen(path string, ready chan<- struct{}, exited <-chan struct{}, opened func()) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		close(ready)
		return fmt.Errorf("inotify: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	_, err = unix.InotifyAddWatch(fd, path, unix.IN_OPEN)
	close(ready)
	if err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	buf := make([]byte, 4096)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("halb exited before it opened its config")
		default:
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 10); n > 0 {
			if m, _ := unix.Read(fd, buf); m > 0 {
				opened()
				return nil
			}
		}
	}
	return errors.New("halb did not open its config file within 10s")
}

// A SIGHUP while halb is starting, before it has even read its config,
// neither kills it nor is lost: the reload runs once halb runs.
func TestSIGHUPAtStartIsAReloadLater(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := buildHalb(t, dir)
	cfgPath := filepath.Join(dir, "halb.yaml")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	doc := fmt.Sprintf(`frontends:
  - {name: api, bind: "127.0.0.1:%d", backend: cp}
backends:
  - name: cp
    health: {type: tcp, interval: 1s, timeout: 100ms}
    servers: [{name: s0, address: "127.0.0.1:1"}]
`, port)
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}

	var logs support.Log
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--socket", filepath.Join(dir, "a.sock"), "--node", "lb1")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	// Hang up on halb the moment it opens its config: it is starting then,
	// well before it runs.
	hupped := make(chan error, 1)
	watching := make(chan struct{})
	exitedEarly := make(chan struct{})
	started := make(chan *os.Process, 1)
	go func() {
		hupped <- onOpen(cfgPath, watching, exitedEarly, func() {
			// Start has returned by the time halb reads its config.
			_ = (<-started).Signal(syscall.SIGHUP)
		})
	}()
	<-watching
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started <- cmd.Process
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		t.Logf("halb's log:\n%s", logs.String())
	}()
	waitLog := func(what string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for !strings.Contains(logs.String(), what) {
			select {
			case <-exited:
				t.Fatalf("halb exited (%v) before logging %q", waitErr, what)
			case <-deadline:
				t.Fatalf("halb did not log %q within 10s", what)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	var hupErr error
	select {
	case hupErr = <-hupped:
	case <-exited:
		close(exitedEarly)
		hupErr = <-hupped
	}
	if hupErr != nil {
		t.Fatal(hupErr)
	}
	waitLog("halb started")
	// The SIGHUP was a reload: it read the config again once halb ran.
	waitLog("config reloaded")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatal("halb did not stop on SIGTERM within 15s")
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		t.Fatalf("halb exited with %v after a SIGHUP at start, want 0", waitErr)
	} else if waitErr != nil {
		t.Fatal(waitErr)
	}
}
