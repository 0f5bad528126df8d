package proxybench

import (
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

// cost is what a proxy process spent during one measurement: CPU time
// and context switches summed over its threads (from /proc, so they cost
// the measurement nothing), and, with Options.Perf, its system calls
// counted by `perf stat`. Divided by the connections, requests or bytes
// of the measurement they say where a proxy's CPU goes per unit of work,
// which a throughput figure on a shared machine cannot.
type cost struct {
	cpu      time.Duration
	switches int64
	syscalls int64 // -1: not counted
	// path is the CPU time of the whole path: the client agent, the
	// servers and the proxy (none for direct). Softirq work lands on
	// whichever task runs when it fires, mostly these, so the figure
	// compares paths' CPU per unit of work where the proxy's own cannot:
	// a proxy's receive processing is charged to its sender.
	path time.Duration
}

// procCost reads the CPU time and context switches of every thread of
// pid. Threads that exit between two readings drop out; Go's and
// HAProxy's threads live as long as the process.
func procCost(pid int) (cost, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return cost{}, fmt.Errorf("list threads of pid %d: %w", pid, err)
	}
	c := cost{syscalls: -1}
	for _, t := range tasks {
		// schedstat: time on CPU (ns), time waiting to run, timeslices.
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return cost{}, fmt.Errorf("parse schedstat of thread %s of pid %d: %w", t.Name(), pid, err)
			}
			c.cpu += time.Duration(ns)
		}
		st, err := os.ReadFile(filepath.Join(dir, t.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(st), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || (k != "voluntary_ctxt_switches" && k != "nonvoluntary_ctxt_switches") {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return cost{}, fmt.Errorf("parse %s of thread %s of pid %d: %w", k, t.Name(), pid, err)
			}
			c.switches += n
		}
	}
	return c, nil
}

// recorder watches one proxy process (pid 0: none, the direct path) and
// the path's ends during one measurement.
type recorder struct {
	pid    int
	ends   []int
	before cost
	stat   *exec.Cmd // perf stat, counting system calls
	out    string    // perf stat's output file
	record *exec.Cmd // perf record, the CPU profile
	trace  *exec.Cmd // strace -c, the system calls by kind
}

// watch starts watching pid and the path's ends; name labels the
// profile files.
func (e *env) watch(ctx context.Context, pid int, name string) (*recorder, error) {
	r := &recorder{pid: pid, ends: e.ends}
	if pid == 0 {
		b, err := r.read()
		r.before = b
		return r, err
	}
	if e.opts.Perf {
		r.out = filepath.Join(e.dir, name+".perfstat")
		r.stat = exec.CommandContext(ctx, "perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(pid), "-o", r.out)
		if err := r.stat.Start(); err != nil {
			return nil, fmt.Errorf("start perf stat on pid %d: %w", pid, err)
		}
	}
	if e.opts.Profile != "" {
		if err := os.MkdirAll(e.opts.Profile, 0o755); err != nil {
			r.stop()
			return nil, fmt.Errorf("make profile directory: %w", err)
		}
		r.record = exec.CommandContext(ctx, "perf", "record", "-q", "-g", "-F", "997", "-p", strconv.Itoa(pid),
			"-o", filepath.Join(e.opts.Profile, name+".perf.data"))
		if err := r.record.Start(); err != nil {
			r.stop()
			return nil, fmt.Errorf("start perf record on pid %d: %w", pid, err)
		}
	}
	if e.opts.Strace {
		r.trace = exec.CommandContext(ctx, "strace", "-c", "-f", "-p", strconv.Itoa(pid), "-o", filepath.Join(e.dir, name+".strace"))
		if err := r.trace.Start(); err != nil {
			r.stop()
			return nil, fmt.Errorf("start strace on pid %d: %w", pid, err)
		}
	}
	// perf and strace attach to the threads before they count; the load starts
	// after this returns, so a short wait loses nothing but a few
	// milliseconds of idle.
	if r.stat != nil || r.record != nil || r.trace != nil {
		time.Sleep(300 * time.Millisecond)
	}
	b, err := r.read()
	if err != nil {
		r.stop()
		return nil, err
	}
	r.before = b
	return r, nil
}

// read takes the proxy's cost so far, and the path's CPU.
func (r *recorder) read() (cost, error) {
	c := cost{syscalls: -1}
	if r.pid != 0 {
		var err error
		if c, err = procCost(r.pid); err != nil {
			return cost{}, err
		}
	}
	c.path = c.cpu
	for _, pid := range r.ends {
		e, err := procCost(pid)
		if err != nil {
			return cost{}, err
		}
		c.path += e.cpu
	}
	return c, nil
}

// stop ends the perf processes this recorder started, by their PIDs.
func (r *recorder) stop() {
	for _, c := range []*exec.Cmd{r.stat, r.record, r.trace} {
		if c == nil || c.Process == nil {
			continue
		}
		_ = c.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
}

// finish stops watching and returns what the process spent meanwhile.
func (r *recorder) finish() (cost, error) {
	after, err := r.read()
	r.stop()
	if err != nil {
		return cost{}, err
	}
	c := cost{cpu: after.cpu - r.before.cpu, switches: after.switches - r.before.switches, syscalls: -1,
		path: after.path - r.before.path}
	if r.stat != nil {
		n, err := perfCount(r.out)
		if err != nil {
			return cost{}, err
		}
		c.syscalls = n
	}
	return c, nil
}

// perfCount reads the count of `perf stat -x,` output: "N,,event,...".
func perfCount(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read perf stat output: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 || !strings.Contains(f[2], "sys_enter") {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("perf stat count %q in %s: %w", f[0], path, err)
		}
		return n, nil
	}
	return 0, errors.New("perf stat output " + path + " has no sys_enter count")
}

// setCost records c per unit of work under prefix: the path's CPU µs,
// and the proxy's CPU µs, context switches and system calls per unit.
func (r Run) setCost(t, prefix string, c cost, units float64) {
	if units <= 0 {
		return
	}
	r.set(t, prefix+"_path_cpu_us", float64(c.path.Microseconds())/units)
	if t == Direct {
		return
	}
	r.set(t, prefix+"_cpu_us", float64(c.cpu.Microseconds())/units)
	r.set(t, prefix+"_cs", float64(c.switches)/units)
	if c.syscalls >= 0 {
		r.set(t, prefix+"_sys", float64(c.syscalls)/units)
	}
}

// loadAvg is the 1-minute load average, 0 if it cannot be read.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
