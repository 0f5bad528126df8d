package proxybench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"halb/internal/loadgen"
)

// proc is a process the benchmark started in a lab namespace. `ip netns
// exec` execs the binary, so the PID is the program's own: its /proc
// entries are what is measured.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startIn runs bin in namespace ns, in its own process group, with its
// output in dir/<name>.log.
func startIn(dir, ns, name, bin string, args ...string) (*proc, error) {
	return startCmd(dir, name, exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...))
}

func startCmd(dir, name string, cmd *exec.Cmd) (*proc, error) {
	f, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	defer func() { _ = f.Close() }()
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after 5 s.
func (p *proc) stop() {
	if p == nil || p.exited() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// usage is a process's memory and open files.
type usage struct {
	rss int64 // bytes
	fds int
}

func readUsage(pid int) (usage, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return usage{}, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	var u usage
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return usage{}, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
			u.rss = kb << 10
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return usage{}, fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	u.fds = len(fds)
	return u, nil
}

// socketCaches are the slab caches that grow with each open TCP socket
// and the file and epoll entry it comes with. Summing only these, rather
// than the whole Slab line, keeps out most of what other work on a shared
// machine allocates (compilers churn kmalloc and buffer caches).
var socketCaches = map[string]bool{
	"TCP": true, "TCPv6": true, "sock_inode_cache": true, "dentry": true, "filp": true,
	"eventpoll_epi": true, "eventpoll_pwq": true, "lsm_file_cache": true, "lsm_inode_cache": true,
	"skbuff_head_cache": true, "skbuff_small_head": true, "skbuff_fclone_cache": true,
}

// slabBytes sums active objects × object size of the socket caches in
// /proc/slabinfo. It is the whole machine's, so other work on it still
// shows up as noise.
func slabBytes() (int64, error) {
	b, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return 0, fmt.Errorf("read slabinfo: %w", err)
	}
	return parseSlabinfo(b, socketCaches)
}

// parseSlabinfo sums active objects × object size over the caches named
// in only.
func parseSlabinfo(b []byte, only map[string]bool) (int64, error) {
	var total int64
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "slabinfo") || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			return 0, fmt.Errorf("slabinfo line %q: too few fields", line)
		}
		if !only[f[0]] {
			continue
		}
		active, err1 := strconv.ParseInt(f[1], 10, 64)
		size, err2 := strconv.ParseInt(f[3], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("slabinfo line %q: %w", line, err)
		}
		total += active * size
	}
	return total, nil
}

// agent drives `halb-bench agent` in the client namespace over its
// standard input and output, one JSON line each way.
type agent struct {
	p   *proc
	in  io.WriteCloser
	out *bufio.Reader
}

func startAgent(dir, ns, bin string) (*agent, error) {
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "agent")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("agent stdin: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("agent stdout: %w", err)
	}
	p, err := startCmd(dir, "agent", cmd)
	if err != nil {
		return nil, err
	}
	return &agent{p: p, in: in, out: bufio.NewReader(out)}, nil
}

// call sends one job and waits for its reply, bounded by d.
func (a *agent) call(ctx context.Context, req loadgen.Request, d time.Duration) (loadgen.Reply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return loadgen.Reply{}, fmt.Errorf("encode job: %w", err)
	}
	if _, err := a.in.Write(append(b, '\n')); err != nil {
		return loadgen.Reply{}, fmt.Errorf("send %s job to agent: %w", req.Op, err)
	}
	type result struct {
		line []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := a.out.ReadBytes('\n')
		ch <- result{line, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		a.stop() // the reader goroutine ends with the pipe
		return loadgen.Reply{}, ctx.Err()
	case <-t.C:
		a.stop()
		return loadgen.Reply{}, fmt.Errorf("agent gave no answer to %s within %s", req.Op, d)
	}
	if r.err != nil {
		return loadgen.Reply{}, fmt.Errorf("read agent's reply to %s: %w", req.Op, r.err)
	}
	var rep loadgen.Reply
	if err := json.Unmarshal(bytes.TrimSpace(r.line), &rep); err != nil {
		return loadgen.Reply{}, fmt.Errorf("agent's reply %q: %w", r.line, err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("%s via %v: %s", req.Op, req.Addrs, rep.Error)
	}
	return rep, nil
}

func (a *agent) stop() {
	_ = a.in.Close()
	a.p.stop()
}
