package keepalivedlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"halb/test/lab"
)

// Stack is keepalived + HAProxy on every LB host of a lab. Each program
// runs in its host's namespace with its config, PID files and sockets in
// the lab's workdir; nothing touches the caller's namespace.
type Stack struct {
	l        *lab.Lab
	prof     Profile
	checkBin string // runs `<checkBin> chk-haproxy --socket S` for keepalived

	mu    sync.Mutex
	procs map[string]*lab.Process // "lb1-haproxy", "lb1-keepalived", ...
}

// New returns a stack for l; checkBin is the program keepalived's
// chk_haproxy runs (see BackendsUp). It touches nothing until Start.
func New(l *lab.Lab, p Profile, checkBin string) *Stack {
	return &Stack{l: l, prof: p, checkBin: checkBin, procs: map[string]*lab.Process{}}
}

// Priority is node's VRRP priority: lb1 is preferred.
func Priority(node string) int {
	if node == "lb1" {
		return 150
	}
	return 100
}

func (s *Stack) path(node, what string) string {
	return filepath.Join(s.l.WorkDir(), node+"-"+what)
}

// StatsSocket is node's HAProxy stats socket.
func (s *Stack) StatsSocket(node string) string { return s.path(node, "haproxy.sock") }

// WriteConfigs writes and checks every node's HAProxy and keepalived configs.
func (s *Stack) WriteConfigs(ctx context.Context) error {
	for _, n := range s.l.LBNames() {
		hc := s.path(n, "haproxy.cfg")
		if err := os.WriteFile(hc, []byte(HAProxyConfig(s.StatsSocket(n), len(s.l.CPNames()), s.l.PKIDir())), 0o600); err != nil {
			return fmt.Errorf("write haproxy config of %s: %w", n, err)
		}
		if out, err := exec.CommandContext(ctx, "haproxy", "-c", "-q", "-f", hc).CombinedOutput(); err != nil {
			return fmt.Errorf("haproxy config of %s does not check: %w\n%s", n, err, out)
		}
		check := fmt.Sprintf("%s chk-haproxy --socket %s", s.checkBin, s.StatsSocket(n))
		kc := s.path(n, "keepalived.conf")
		if err := os.WriteFile(kc, []byte(KeepalivedConfig(s.prof, n, Priority(n), check)), 0o600); err != nil {
			return fmt.Errorf("write keepalived config of %s: %w", n, err)
		}
		if out, err := exec.CommandContext(ctx, "keepalived", "-t", "-f", kc).CombinedOutput(); err != nil {
			return fmt.Errorf("keepalived config of %s does not check: %w\n%s", n, err, out)
		}
	}
	return nil
}

// Start starts HAProxy on node, waits until it answers with its backends
// up (at most 10 s), then starts keepalived.
func (s *Stack) Start(ctx context.Context, node string) error {
	if err := s.StartHAProxy(ctx, node); err != nil {
		return err
	}
	return s.StartKeepalived(node)
}

// StartHAProxy starts HAProxy in the foreground on node and waits until
// every backend has a server up.
func (s *Stack) StartHAProxy(ctx context.Context, node string) error {
	_ = os.Remove(s.StatsSocket(node))
	p, err := s.l.Spawn(node+"-haproxy", node, "haproxy", "-db", "-f", s.path(node, "haproxy.cfg"))
	if err != nil {
		return err
	}
	s.set(node+"-haproxy", p)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := BackendsUp(ctx, s.StatsSocket(node), Backends())
		switch {
		case err == nil:
			return nil
		case p.Exited():
			return fmt.Errorf("haproxy on %s exited: %v; log:\n%s", node, p.Err(), s.l.LogTail(node+"-haproxy", 20))
		case time.Now().After(deadline) || ctx.Err() != nil:
			return fmt.Errorf("haproxy on %s not ready after 10s: %w", node, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartKeepalived starts keepalived's VRRP process on node in the
// foreground, logging to the lab log, with its own PID files.
func (s *Stack) StartKeepalived(node string) error {
	// A VRRP child that outlived a crashed parent still owns its PID file,
	// and keepalived refuses to start beside it ("daemon is already running").
	if err := s.reapKeepalived(node); err != nil {
		return err
	}
	p, err := s.l.Spawn(node+"-keepalived", node, "keepalived",
		"--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
		"--use-file", s.path(node, "keepalived.conf"),
		"--pid", s.path(node, "keepalived.pid"),
		"--vrrp_pid", s.path(node, "keepalived-vrrp.pid"),
		"--checkers_pid", s.path(node, "keepalived-checkers.pid"))
	if err != nil {
		return err
	}
	s.set(node+"-keepalived", p)
	return nil
}

func (s *Stack) set(name string, p *lab.Process) {
	s.mu.Lock()
	s.procs[name] = p
	s.mu.Unlock()
}

func (s *Stack) get(name string) *lab.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[name]
}

// Running reports whether both programs run on node.
func (s *Stack) Running(node string) bool {
	for _, what := range []string{"-haproxy", "-keepalived"} {
		if p := s.get(node + what); p == nil || p.Exited() {
			return false
		}
	}
	return true
}

// Crash freezes keepalived and HAProxy on node (SIGSTOP to both process
// groups, so neither can say goodbye), then kills them with SIGKILL and
// waits until they are gone. The VIP stays on node's interface, as after
// any crash of the daemon.
func (s *Stack) Crash(node string) error {
	ps := []*lab.Process{s.get(node + "-keepalived"), s.get(node + "-haproxy")}
	var errs []error
	for _, p := range ps {
		if p != nil {
			errs = append(errs, p.Signal(syscall.SIGSTOP))
		}
	}
	for _, p := range ps {
		if p != nil {
			errs = append(errs, p.Stop(syscall.SIGKILL, 5*time.Second))
		}
	}
	errs = append(errs, s.reapKeepalived(node))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("crash %s: %w", node, err)
	}
	return nil
}

// keepalivedPIDFiles are the PID files StartKeepalived names, in this
// lab's workdir: the PIDs in them are processes this stack started.
var keepalivedPIDFiles = [...]string{"keepalived.pid", "keepalived-vrrp.pid", "keepalived-checkers.pid"}

// reapKeepalived kills, by the PIDs in node's keepalived PID files, any
// keepalived process still alive (the VRRP child can outlive its killed
// parent), and removes the files.
func (s *Stack) reapKeepalived(node string) error {
	paths := make([]string, len(keepalivedPIDFiles))
	for i, f := range keepalivedPIDFiles {
		paths[i] = s.path(node, f)
	}
	if err := reapPIDFiles(paths, 5*time.Second); err != nil {
		return fmt.Errorf("keepalived on %s: %w", node, err)
	}
	return nil
}

// reapPIDFiles SIGKILLs the keepalived process each PID file names, if it
// still lives, waits up to wait for it to go, and removes the files. A PID
// now used by another program is left alone.
func reapPIDFiles(paths []string, wait time.Duration) error {
	var errs []error
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		var pid int
		if _, perr := fmt.Sscan(strings.TrimSpace(string(b)), &pid); err != nil || perr != nil || pid <= 1 {
			_ = os.Remove(path)
			continue
		}
		if isKeepalived(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline := time.Now().Add(wait)
			for isKeepalived(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if isKeepalived(pid) {
				errs = append(errs, fmt.Errorf("pid %d (%s) survived SIGKILL for %s", pid, filepath.Base(path), wait))
				continue
			}
		}
		_ = os.Remove(path)
	}
	return errors.Join(errs...)
}

// isKeepalived reports whether pid is a live (not zombie) keepalived
// process, so a PID reused by something else is never signalled.
func isKeepalived(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) state ...": comm may hold spaces, so cut at the last ')'.
	st := string(stat)
	open, closing := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
	if open < 0 || closing < open || closing+2 >= len(st) {
		return false
	}
	return st[open+1:closing] == "keepalived" && st[closing+2] != 'Z'
}

// StopKeepalived stops keepalived on node gracefully (SIGTERM): it sends
// a priority-0 advert and drops the VIP, the planned handover.
func (s *Stack) StopKeepalived(node string) error {
	p := s.get(node + "-keepalived")
	if p == nil {
		return fmt.Errorf("keepalived on %s was never started", node)
	}
	return p.Stop(syscall.SIGTERM, 10*time.Second)
}

// StopHAProxy stops HAProxy on node (SIGTERM: a hard stop, which closes
// the connections it holds).
func (s *Stack) StopHAProxy(node string) error {
	p := s.get(node + "-haproxy")
	if p == nil {
		return fmt.Errorf("haproxy on %s was never started", node)
	}
	return p.Stop(syscall.SIGTERM, 10*time.Second)
}

// State is the VRRP state keepalived last logged on node ("MASTER",
// "BACKUP", "FAULT"), or "" when it has logged none since its start.
func (s *Stack) State(node string) string {
	log := s.l.Log(node + "-keepalived")
	if i := strings.LastIndex(log, "=== lab:"); i >= 0 {
		log = log[i:] // since the latest start
	}
	state := ""
	for _, line := range strings.Split(log, "\n") {
		if _, after, ok := strings.Cut(line, "Entering "); ok {
			if st, _, ok := strings.Cut(after, " STATE"); ok {
				state = st
			}
		}
	}
	return state
}
