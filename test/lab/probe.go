package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"halb/internal/probe"
)

// ProbeRun is a probe running in the client namespace.
type ProbeRun struct {
	name     string
	p        *proc
	out      *bytes.Buffer
	deadline time.Time // when the probe ends by itself
}

// StartProbe runs `halb-lab probe` in the client namespace against target
// for at most max, presenting the administrator's credentials (tls and
// https) as kubectl and talosctl would, and returns once the first attempt has finished, so
// that anything the caller does next is measured.
func (l *Lab) StartProbe(ctx context.Context, target netip.AddrPort, mode string, max time.Duration) (*ProbeRun, error) {
	l.mu.Lock()
	l.probes++
	name := fmt.Sprintf("probe%d", l.probes)
	l.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(l.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open probe log: %w", err)
	}
	args := append([]string{"netns", "exec", l.NS("cl"), l.opts.LabBin, "probe",
		"--target", target.String(), "--mode", mode, "--interval", "10ms", "--duration", max.String(), "-o", "json"},
		l.probeCredentials(mode)...)
	cmd := exec.Command("ip", args...)
	out := &bytes.Buffer{}
	cmd.Stdout = out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("probe stderr: %w", err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start probe: %w", err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	started := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		// Relay stderr to the log, noting the "started" line the probe
		// prints after its first attempt.
		defer close(copied)
		defer func() { _ = logf.Close() }()
		r := bufio.NewReader(stderr)
		seen := false
		for {
			line, err := r.ReadString('\n')
			_, _ = io.WriteString(logf, line)
			if !seen && strings.HasPrefix(line, "started") {
				seen = true
				close(started)
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		<-copied // Wait must not close the pipe before it is drained
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs[name] = p
	l.mu.Unlock()
	select {
	case <-started:
		return &ProbeRun{name: name, p: p, out: out, deadline: time.Now().Add(max)}, nil
	case <-p.done:
		// A short probe may have started and finished before this select
		// ran; both channels are closed then.
		select {
		case <-started:
			return &ProbeRun{name: name, p: p, out: out, deadline: time.Now().Add(max)}, nil
		default:
		}
		return nil, fmt.Errorf("probe exited before its first attempt: %v: %s", p.err, l.LogTail(name, 5))
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	_ = p.stop(syscall.SIGKILL, time.Second)
	return nil, fmt.Errorf("probe did not start within 10s")
}

// Stop ends the probe now and returns its report.
func (r *ProbeRun) Stop() (probe.Report, error) {
	if err := r.p.kill(syscall.SIGINT); err != nil {
		return probe.Report{}, err
	}
	return r.Wait()
}

// Wait waits for the probe to finish (its max duration, plus 10 s) and
// returns its report.
func (r *ProbeRun) Wait() (probe.Report, error) {
	select {
	case <-r.p.done:
	case <-time.After(time.Until(r.deadline) + 10*time.Second):
		_ = r.p.stop(syscall.SIGKILL, time.Second)
		return probe.Report{}, fmt.Errorf("%s did not finish", r.name)
	}
	var rep probe.Report
	if r.p.err != nil {
		return rep, fmt.Errorf("%s: %w", r.name, r.p.err)
	}
	if err := json.Unmarshal(r.out.Bytes(), &rep); err != nil {
		return rep, fmt.Errorf("parse report of %s: %w", r.name, err)
	}
	return rep, nil
}

// Probe runs a probe for d and returns its report.
func (l *Lab) Probe(ctx context.Context, target netip.AddrPort, mode string, d time.Duration) (probe.Report, error) {
	r, err := l.StartProbe(ctx, target, mode, d)
	if err != nil {
		return probe.Report{}, err
	}
	return r.Wait()
}
