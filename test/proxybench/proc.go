package proxybench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"halb/test/loadgen"
)

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

// agent drives `halb-bench agent` in the client namespace over its unix
// socket, one JSON line each way.
type agent struct {
	c net.Conn
	r *bufio.Reader
}

// dialAgent connects to the agent's socket, waiting up to 10 s for it.
func dialAgent(ctx context.Context, path string) (*agent, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return &agent{c: c, r: bufio.NewReader(c)}, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("the load agent does not answer on %s: %w", path, err)
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// call sends one job and waits for its reply, bounded by d and ctx.
func (a *agent) call(ctx context.Context, req loadgen.Request, d time.Duration) (loadgen.Reply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return loadgen.Reply{}, fmt.Errorf("encode job: %w", err)
	}
	_ = a.c.SetDeadline(time.Now().Add(d))
	stop := context.AfterFunc(ctx, func() { _ = a.c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := a.c.Write(append(b, '\n')); err != nil {
		return loadgen.Reply{}, fmt.Errorf("send %s job to the agent: %w", req.Op, err)
	}
	line, err := a.r.ReadBytes('\n')
	if err != nil {
		return loadgen.Reply{}, fmt.Errorf("the agent's reply to %s (bound %s): %w", req.Op, d, errors.Join(err, ctx.Err()))
	}
	var rep loadgen.Reply
	if err := json.Unmarshal(bytes.TrimSpace(line), &rep); err != nil {
		return loadgen.Reply{}, fmt.Errorf("agent's reply %q: %w", line, err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("%s via %v: %s", req.Op, req.Addrs, rep.Error)
	}
	return rep, nil
}

func (a *agent) close() { _ = a.c.Close() }
