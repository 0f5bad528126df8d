package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"halb/test/netnsrun"
)

// Dial opens a TCP connection from inside host's namespace to addr (an
// IP address and port). The socket is made in that namespace and stays
// there, so the caller (in the root namespace) can use it like any other
// connection; the dial costs what a plain one does (netnsrun.Dialer), so
// a burst of reconnections measures the system under test, not the lab.
func (l *Lab) Dial(ctx context.Context, host, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, host, err)
	}
	d, err := l.dialer(host)
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, host, err)
	}
	return d.DialContext(ctx, ap)
}

// dialer returns host's Dialer, opened on first use and closed by Close.
func (l *Lab) dialer(host string) (*netnsrun.Dialer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab closed")
	}
	if d, ok := l.dialers[host]; ok {
		return d, nil
	}
	d, err := netnsrun.NewDialer(l.NS(host))
	if err != nil {
		return nil, err
	}
	if l.dialers == nil {
		l.dialers = map[string]*netnsrun.Dialer{}
	}
	l.dialers[host] = d
	return d, nil
}

// Netem adds loss (percent) and delay to host's link, in both directions:
// on its eth0 and on the switch's side of the veth. On a kernel without
// sch_netem it falls back to what is there: nftables drops lossPct% of the
// host's packets and a tbf rate limit whose queue may hold a packet up to
// delay stands in for the delay. It returns which of the two it used.
func (l *Lab) Netem(ctx context.Context, host string, lossPct int, delay time.Duration) (string, error) {
	var errs []error
	for _, side := range l.sides(host) {
		_, err := run(ctx, "tc", "-n", l.NS(side[0]), "qdisc", "replace", "dev", side[1], "root", "netem",
			"loss", strconv.Itoa(lossPct)+"%", "delay", delay.String())
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err == nil {
		return "netem", nil
	}
	if !strings.Contains(err.Error(), "qdisc kind is unknown") {
		return "", fmt.Errorf("netem on %s: %w", host, err)
	}
	for _, side := range l.sides(host) {
		if _, err := run(ctx, "tc", "-n", l.NS(side[0]), "qdisc", "replace", "dev", side[1], "root", "tbf",
			"rate", "2mbit", "burst", "8kb", "latency", delay.String()); err != nil {
			return "", fmt.Errorf("rate limit on %s: %w", host, err)
		}
	}
	rule := fmt.Sprintf("numgen random mod 100 < %d drop", lossPct)
	script := fmt.Sprintf("table inet halblab_loss {\n chain in { type filter hook input priority 0; %s; }\n chain out { type filter hook output priority 0; %s; }\n}\n", rule, rule)
	if _, err := runStdin(ctx, script, "ip", "netns", "exec", l.NS(host), "nft", "-f", "-"); err != nil {
		return "", fmt.Errorf("packet loss on %s: %w", host, err)
	}
	return "nft+tbf", nil
}

// sides are host's eth0 and the switch's end of its veth.
func (l *Lab) sides(host string) [][2]string { return [][2]string{{host, "eth0"}, {"sw", host}} }

// ClearNetem undoes Netem, whichever way it was done.
func (l *Lab) ClearNetem(ctx context.Context, host string) error {
	var errs []error
	for _, side := range l.sides(host) {
		_, err := run(ctx, "tc", "-n", l.NS(side[0]), "qdisc", "del", "dev", side[1], "root")
		if err != nil && !strings.Contains(err.Error(), "handle of zero") && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	if _, err := run(ctx, "ip", "netns", "exec", l.NS(host), "nft", "delete", "table", "inet", "halblab_loss"); err != nil &&
		!strings.Contains(err.Error(), "No such file") {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clear netem on %s: %w", host, err)
	}
	return nil
}

// PID returns the process ID of a process the lab started (lb1, cp2, ...),
// 0 if it is not running.
func (l *Lab) PID(name string) int {
	l.mu.Lock()
	p := l.procs[name]
	l.mu.Unlock()
	if p == nil || p.exited() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exec runs a short command (bounded by ctx and 30 s) inside host's
// namespace and returns its combined output and exit code (-1 if it did
// not run).
func (l *Lab) Exec(ctx context.Context, host string, argv ...string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := runCombined(ctx, "ip", append([]string{"netns", "exec", l.NS(host)}, argv...)...)
	return out, exitCode(err), err
}

// ConfigText returns node's config file as it is on disk now.
func (l *Lab) ConfigText(node string) (string, error) {
	b, err := os.ReadFile(l.ConfigFile(node))
	if err != nil {
		return "", fmt.Errorf("read config of %s: %w", node, err)
	}
	return string(b), nil
}

// WriteRawConfig writes text as node's config without checking it, to
// feed halb a broken file.
func (l *Lab) WriteRawConfig(node, text string) error {
	if err := os.WriteFile(filepath.Join(l.dir, node+".yaml"), []byte(text), 0o600); err != nil {
		return fmt.Errorf("write config of %s: %w", node, err)
	}
	return nil
}

func runStdin(ctx context.Context, stdin string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func runCombined(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
