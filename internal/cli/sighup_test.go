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

	"halb/internal/testlog"
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

// feed opens the FIFO at path for writing, which completes only once a
// reader opened it, calls opened and writes doc. It gives up after 10s or
// once exited is closed, opening the FIFO for reading itself to free the
// blocked open.
func feed(t *testing.T, path, doc string, exited <-chan struct{}, opened func()) {
	t.Helper()
	open := make(chan *os.File, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			open <- nil
			return
		}
		open <- f
	}()
	var f *os.File
	select {
	case f = <-open:
	case <-exited:
	case <-time.After(10 * time.Second):
	}
	if f == nil {
		if r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
			if w := <-open; w != nil {
				_ = w.Close()
			}
			_ = r.Close()
		}
		t.Fatal("halb did not open its config file")
	}
	defer func() { _ = f.Close() }()
	opened()
	if _, err := f.WriteString(doc); err != nil {
		t.Fatal(err)
	}
}

// A SIGHUP while halb is starting, before it has even read its config,
// neither kills it nor is lost: the reload runs once halb runs.
func TestSIGHUPAtStartIsAReloadLater(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := buildHalb(t, dir)
	// The config is a FIFO: halb blocks reading it, which is the moment
	// the test sends SIGHUP, and the moment a reload reads it again.
	cfgPath := filepath.Join(dir, "halb.yaml")
	if err := unix.Mkfifo(cfgPath, 0o600); err != nil {
		t.Fatal(err)
	}
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

	var logs testlog.Buffer
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--socket", filepath.Join(dir, "a.sock"), "--node", "lb1")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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

	// Once halb has opened its config for reading it is starting, well
	// before it runs: hang up on it then.
	feed(t, cfgPath, doc, exited, func() {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Error(err)
		}
	})
	waitLog("halb started")
	waitLog("the reload waits until halb runs")
	// The queued reload reads the config again.
	feed(t, cfgPath, doc, exited, func() {})
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
