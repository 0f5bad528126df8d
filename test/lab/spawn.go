package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// Process is a program other than halb that the lab runs in one of its
// namespaces (a reference load balancer, a stress tool). Close stops it
// with everything else.
type Process struct{ p *proc }

// Spawn runs bin with args in host's namespace as the lab process name
// (log <workdir>/<name>.log, PID under <workdir>/pids). It refuses a name
// whose process is still running.
func (l *Lab) Spawn(name, host, bin string, args ...string) (*Process, error) {
	l.mu.Lock()
	old := l.procs[name]
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("spawn %s: lab is closed", name)
	}
	if old != nil && !old.exited() {
		return nil, fmt.Errorf("spawn %s: already running (pid %d)", name, old.cmd.Process.Pid)
	}
	p, err := l.start(name, l.NS(host), bin, args...)
	if err != nil {
		return nil, err
	}
	return &Process{p: p}, nil
}

// Pid is the process's PID (also its process group).
func (p *Process) Pid() int { return p.p.cmd.Process.Pid }

// Exited reports whether the process has exited and been reaped.
func (p *Process) Exited() bool { return p.p.exited() }

// Err is the exit status once Exited.
func (p *Process) Err() error {
	if !p.p.exited() {
		return nil
	}
	return p.p.err
}

// Signal sends sig to the process's group and returns at once.
func (p *Process) Signal(sig syscall.Signal) error { return p.p.kill(sig) }

// Stop sends sig and waits up to grace for the exit, then kills the group.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) error { return p.p.stop(sig, grace) }

// DelVIP removes the VIP from host's eth0 if it is there, as a reboot
// would after a process was killed and left it behind.
func (l *Lab) DelVIP(ctx context.Context, host string) error {
	_, err := l.ip(ctx, host, "addr", "del", VIPPrefix().String(), "dev", "eth0")
	if err != nil && (strings.Contains(err.Error(), "Cannot assign requested address") || strings.Contains(err.Error(), "Address not found")) {
		return nil // not there
	}
	return err
}

// VIPPrefix is the VIP with the lab subnet's length, as a config writes it.
func VIPPrefix() netip.Prefix { return netip.PrefixFrom(VIP(), subnet.Bits()) }
