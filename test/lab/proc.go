package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one process the lab started inside a namespace.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // exit status, valid after done
	// goDump: a Go program, sent SIGQUIT before SIGKILL when it does not
	// stop in time, so its log ends with every goroutine's stack.
	goDump bool
}

// start runs bin with args inside namespace ns via `ip netns exec`, which
// execs the binary, so the PID is the binary's own. The process gets its own
// process group, output appended to <workdir>/<name>.log and its PID recorded
// under <workdir>/pids for Down.
func (l *Lab) start(name, ns, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(l.dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	defer func() { _ = f.Close() }() // the child holds its own copy
	_, _ = fmt.Fprintf(f, "=== lab: %s starting %s %s in %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "), ns)
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	pidFile := filepath.Join(l.dir, "pids", name+".pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		_ = p.kill(syscall.SIGKILL)
		return nil, fmt.Errorf("record pid of %s: %w", name, err)
	}
	l.mu.Lock()
	l.procs[name] = p
	l.mu.Unlock()
	l.log.Debug("started", "proc", name, "pid", cmd.Process.Pid, "ns", ns)
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill signals the process group.
func (p *proc) kill(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s to %s: %w", sig, p.name, err)
	}
	return nil
}

// stop sends sig, waits up to grace for the exit, then kills.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) error {
	if err := p.kill(sig); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	dumped := ""
	if p.goDump && sig != syscall.SIGKILL {
		if p.kill(syscall.SIGQUIT) == nil {
			select {
			case <-p.done:
				return fmt.Errorf("%s ignored %s for %s; its goroutines are dumped at the end of its log", p.name, sig, grace)
			case <-time.After(2 * time.Second):
				dumped = " (SIGQUIT did not dump its goroutines either)"
			}
		}
	}
	if err := p.kill(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return fmt.Errorf("%s ignored %s for %s and was killed%s", p.name, sig, grace, dumped)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s survived SIGKILL for 5s", p.name)
	}
}

// run runs a short command with a bound and returns its stdout.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// Down tears down a lab left running by another process (`halb-lab up`):
// it kills the processes recorded under workdir/pids — only those whose
// command line still mentions workdir, so a recycled PID is left alone —
// then any process left in the prefix's namespaces, then the namespaces.
// prefix "" reads it from workdir/prefix.
func Down(ctx context.Context, workdir, prefix string) error {
	if prefix == "" && workdir != "" {
		b, err := os.ReadFile(filepath.Join(workdir, "prefix"))
		if err != nil {
			return fmt.Errorf("read lab prefix: %w", err)
		}
		prefix = strings.TrimSpace(string(b))
	}
	if !validPrefix(prefix) {
		return fmt.Errorf("lab prefix %q: want 2-6 lowercase letters or digits", prefix)
	}
	var errs []error
	if workdir != "" {
		files, _ := filepath.Glob(filepath.Join(workdir, "pids", "*.pid"))
		var pids []int
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 1 {
				continue
			}
			cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil || !bytes.Contains(cl, []byte(workdir)) {
				continue // gone, or the PID now belongs to someone else
			}
			_ = syscall.Kill(pid, syscall.SIGTERM)
			pids = append(pids, pid)
		}
		waitGone(pids, 5*time.Second)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	nss, err := Namespaces(ctx, prefix)
	if err != nil {
		return err
	}
	for _, ns := range nss {
		// Anything still inside our own namespaces is ours.
		out, _ := run(ctx, "ip", "netns", "pids", ns)
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, ns := range nss {
		if _, err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waitGone polls until none of pids exists, up to d.
func waitGone(pids []int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		alive := false
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				alive = true
			}
		}
		if !alive {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Namespaces lists the network namespaces named <prefix>-*.
func Namespaces(ctx context.Context, prefix string) ([]string, error) {
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var nss []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			nss = append(nss, f[0])
		}
	}
	return nss, nil
}

func validPrefix(p string) bool {
	if len(p) < 2 || len(p) > 6 {
		return false
	}
	for _, r := range p {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// StartProc runs bin with args in host's namespace ("cl", "lb1", "cp2",
// ...) as a lab process called name, with its output in
// <workdir>/<name>.log; Close stops it like the lab's own. It returns the
// PID, which is the program's own (`ip netns exec` execs it).
func (l *Lab) StartProc(name, host, bin string, args ...string) (int, error) {
	p, err := l.Spawn(name, host, bin, args...)
	if err != nil {
		return 0, err
	}
	return p.Pid(), nil
}

// StopProc stops a process started by StartProc: SIGTERM, then SIGKILL
// after 5 s.
func (l *Lab) StopProc(name string) error {
	l.mu.Lock()
	p := l.procs[name]
	l.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s was never started", name)
	}
	return p.stop(syscall.SIGTERM, 5*time.Second)
}
