package proxybench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"halb/test/lab"
	"halb/test/loadgen"
)

// Options configure a proxy benchmark.
type Options struct {
	HalbBin, LabBin, BenchBin string // binaries: halb, halb-lab (fake CPs), halb-bench (serve, agent)
	HAProxyBin                string // "" means haproxy from $PATH

	Quick     bool     // short measurements and fewer idle connections
	Reps      int      // repetitions; 0: 3
	Seconds   float64  // length of one measurement; 0: 3 (quick: 1)
	IdleConns int      // idle connections to ask for; 0: 5000 (quick: 1000)
	Only      []string // groups to measure (bulk, churn, rr, idle); empty: all
	NoSplice  bool     // leave out the HAProxy variant with splice forced
	WorkDir   string   // configs and logs; "" makes a temporary one, removed on success
	// Perf counts each proxy's system calls per measurement with
	// `perf stat` (a tracepoint per call: a few per cent slower).
	Perf bool
	// Profile, when set, is a directory for a `perf record -g` CPU
	// profile of each proxy during each bulk, churn and rr measurement.
	Profile string
	// Strace keeps `strace -c -f` system call tables of each proxy per
	// measurement in the work directory (<target>-<part>-rep<N>.strace).
	// strace stops the proxy at every call, so the run's figures are
	// not comparable; the counts per call kind are the point.
	Strace bool
}

// Bench is one proxy benchmark run.
type Bench struct {
	opts Options
	log  *slog.Logger
}

// New returns a benchmark; it touches nothing until Run.
func New(opts Options, log *slog.Logger) (*Bench, error) {
	if opts.Reps <= 0 {
		opts.Reps = 3
	}
	if opts.Seconds <= 0 {
		opts.Seconds = 3
		if opts.Quick {
			opts.Seconds = 1
		}
	}
	if opts.IdleConns <= 0 {
		opts.IdleConns = 5000
		if opts.Quick {
			opts.IdleConns = 1000
		}
	}
	if len(opts.Only) == 0 {
		opts.Only = Groups()
	}
	for _, g := range opts.Only {
		if !slices.Contains(Groups(), g) {
			return nil, fmt.Errorf("unknown part %q: want some of %v", g, Groups())
		}
	}
	if opts.HAProxyBin == "" {
		opts.HAProxyBin = "haproxy"
	}
	return &Bench{opts: opts, log: log.With("component", "proxybench")}, nil
}

// Where each proxy listens on the LB host.
var (
	halbPorts    = proxyPorts{8000, 8001}
	haproxyPorts = proxyPorts{9000, 9001}
	splicePorts  = proxyPorts{9100, 9101}
)

// haproxyMaxconn leaves HAProxy room for the idle test under the 20 000
// open-file limit: it needs two fds per connection, and with splice
// forced a pipe (two more) for every fourth.
const haproxyMaxconn = 7000

// env is a running lab with servers, proxies and the client agent.
type env struct {
	opts    Options
	log     *slog.Logger
	dir     string
	lab     *lab.Lab
	lb      netip.Addr
	cps     []netip.Addr
	proxies map[string]int // running proxies' PIDs by target
	agent   *agent
	rep     int   // the repetition being measured, from 0
	ends    []int // PIDs of the client agent and the servers
}

// targetAddrs are the echo and sink addresses a target is reached at.
func (e *env) targetAddrs(t string) (echo, sink []string) {
	var ports proxyPorts
	switch t {
	case Direct:
		for _, cp := range e.cps {
			echo = append(echo, netip.AddrPortFrom(cp, echoPort).String())
			sink = append(sink, netip.AddrPortFrom(cp, sinkPort).String())
		}
		return echo, sink
	case Halb:
		ports = halbPorts
	case HAProxy:
		ports = haproxyPorts
	case HAProxySplice:
		ports = splicePorts
	}
	return []string{netip.AddrPortFrom(e.lb, ports.echo).String()}, []string{netip.AddrPortFrom(e.lb, ports.sink).String()}
}

// Run builds the lab, measures every repetition and returns the summary.
// The lab and every process are gone when it returns.
func (b *Bench) Run(ctx context.Context) (*Summary, error) {
	for _, bin := range []string{b.opts.HalbBin, b.opts.LabBin, b.opts.BenchBin} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("benchmark binary: %w", err)
		}
	}
	if _, err := exec.LookPath(b.opts.HAProxyBin); err != nil {
		return nil, fmt.Errorf("haproxy is needed (apt-get install -y haproxy): %w", err)
	}
	dir, own := b.opts.WorkDir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "halb-bench-")
		if err != nil {
			return nil, fmt.Errorf("make workdir: %w", err)
		}
		dir, own = d, true
	}
	e := &env{opts: b.opts, log: b.log, dir: dir, lb: lab.LBAddr(1), proxies: map[string]int{}}
	for i := 1; i <= 3; i++ {
		e.cps = append(e.cps, lab.CPAddr(i))
	}
	e.lab = lab.New(lab.Options{LBs: 1, CPs: 3, LabBin: b.opts.LabBin, WorkDir: dir}, b.log)
	s, err := e.run(ctx)
	if cerr := e.close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("tear down: %w", cerr))
	}
	if err != nil {
		return nil, fmt.Errorf("%w (logs and configs in %s)", err, dir)
	}
	if own {
		_ = os.RemoveAll(dir)
	}
	return s, nil
}

// close stops every process (the lab started them all) and removes the lab.
func (e *env) close() error {
	if e.agent != nil {
		e.agent.close()
	}
	return e.lab.Close()
}

func (e *env) run(ctx context.Context) (*Summary, error) {
	if err := e.lab.Up(ctx); err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	e.log.Info("lab up", "prefix", e.lab.Prefix())
	// Connection churn leaves TIME_WAIT sockets on the closing side; these
	// namespaces are ours, so widen their port range and reuse them.
	for _, host := range []string{"cl", "lb1"} {
		if _, err := command(ctx, "ip", "netns", "exec", e.lab.NS(host), "sysctl", "-q", "-w",
			"net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=10000 65000"); err != nil {
			return nil, err
		}
	}
	for i, cp := range e.lab.CPNames() {
		pid, err := e.lab.StartProc("serve-"+cp, cp, e.opts.BenchBin, "serve", "--listen", e.cps[i].String(),
			"--echo-port", fmt.Sprint(echoPort), "--sink-port", fmt.Sprint(sinkPort))
		if err != nil {
			return nil, err
		}
		e.ends = append(e.ends, pid)
	}
	if err := e.writeConfigs(); err != nil {
		return nil, err
	}
	sock := filepath.Join(e.dir, "agent.sock")
	agentPID, err := e.lab.StartProc("agent", "cl", e.opts.BenchBin, "agent", "--socket", sock)
	if err != nil {
		return nil, err
	}
	e.ends = append(e.ends, agentPID)
	a, err := dialAgent(ctx, sock)
	if err != nil {
		return nil, err
	}
	e.agent = a
	echo, sink := e.targetAddrs(Direct)
	if _, err := a.call(ctx, loadgen.Request{Op: "wait", Addrs: echo, Sinks: sink, N: 1, Seconds: 10}, 15*time.Second); err != nil {
		return nil, fmt.Errorf("benchmark servers: %w", err)
	}
	s := &Summary{Quick: e.opts.Quick, Reps: e.opts.Reps, Seconds: e.opts.Seconds, IdleConns: e.opts.IdleConns,
		Targets: e.targets(), Groups: e.groups()}
	for rep := range e.opts.Reps {
		s.Load = append(s.Load, loadAvg())
		r, err := e.repetition(ctx, rep)
		if err != nil {
			return nil, fmt.Errorf("repetition %d: %w", rep+1, err)
		}
		s.Runs = append(s.Runs, r)
	}
	s.Load = append(s.Load, loadAvg())
	s.summarize()
	return s, nil
}

func (e *env) targets() []string {
	t := []string{Direct, Halb, HAProxy}
	if !e.opts.NoSplice {
		t = append(t, HAProxySplice)
	}
	return t
}

func (e *env) groups() []string {
	var gs []string
	for _, g := range Groups() {
		if slices.Contains(e.opts.Only, g) {
			gs = append(gs, g)
		}
	}
	return gs
}

func (e *env) configPath(t string) string { return filepath.Join(e.dir, t+".cfg") }

func (e *env) writeConfigs() error {
	files := map[string]string{
		Halb:          halbConfig(e.lb, e.cps, halbPorts, filepath.Join(e.dir, "halb.sock")),
		HAProxy:       haproxyConfig(e.lb, e.cps, haproxyPorts, haproxyMaxconn, false),
		HAProxySplice: haproxyConfig(e.lb, e.cps, splicePorts, haproxyMaxconn, true),
	}
	for t, text := range files {
		if err := writeFile(e.configPath(t), text); err != nil {
			return err
		}
	}
	if out, err := command(context.Background(), e.opts.HalbBin, "check", "--config", e.configPath(Halb)); err != nil {
		return fmt.Errorf("halb config does not check: %w\n%s", err, out)
	}
	return nil
}

// startProxies (re)starts every proxy, so each repetition — and its idle
// memory figure — begins from a fresh process, and waits until each
// forwards to its servers.
func (e *env) startProxies(ctx context.Context) error {
	for t := range e.proxies {
		if err := e.lab.StopProc(t); err != nil {
			return fmt.Errorf("stop %s: %w", t, err)
		}
		delete(e.proxies, t)
	}
	for _, t := range e.targets() {
		var pid int
		var err error
		switch t {
		case Direct:
			continue
		case Halb:
			pid, err = e.lab.StartProc(t, "lb1", e.opts.HalbBin, "run", "--config", e.configPath(t))
		default:
			pid, err = e.lab.StartProc(t, "lb1", e.opts.HAProxyBin, "-db", "-f", e.configPath(t))
		}
		if err != nil {
			return err
		}
		e.proxies[t] = pid
		echo, sink := e.targetAddrs(t)
		// Six exchanges in a row over roundrobin: every server is up.
		if _, err := e.agent.call(ctx, loadgen.Request{Op: "wait", Addrs: echo, Sinks: sink, N: 6, Seconds: 15}, 20*time.Second); err != nil {
			return fmt.Errorf("%s does not serve: %w", t, err)
		}
	}
	return nil
}

// repetition measures every target once for every group.
func (e *env) repetition(ctx context.Context, rep int) (Run, error) {
	if err := e.startProxies(ctx); err != nil {
		return nil, err
	}
	e.rep = rep
	r := Run{}
	for _, g := range e.groups() {
		e.log.Info("measuring", "rep", rep+1, "part", g)
		for _, t := range e.targets() {
			var err error
			switch g {
			case GroupIdle:
				err = e.idle(ctx, r, t)
			case GroupBulk:
				err = e.bulk(ctx, r, t)
			case GroupChurn:
				err = e.churn(ctx, r, t)
			case GroupRR:
				err = e.rr(ctx, r, t)
			}
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", g, t, err)
			}
		}
	}
	if d := r[Direct]["idle_slab_kib"]; d > 0 {
		for _, t := range e.targets() {
			if v, ok := r[t]["idle_slab_kib"]; ok && t != Direct {
				r.set(t, "idle_kernel_kib", v-d)
				r.set(t, "idle_total_kib", r[t]["idle_rss_kib"]+v-d)
			}
		}
	}
	return r, nil
}

// job bounds: the measurement plus room to connect and drain.
func (e *env) job(ctx context.Context, req loadgen.Request) (loadgen.Reply, error) {
	return e.agent.call(ctx, req, time.Duration(req.Seconds*float64(time.Second))+60*time.Second)
}

// watched runs a job while it watches t's proxy process and the path.
func (e *env) watched(ctx context.Context, t, name string, req loadgen.Request) (loadgen.Reply, cost, error) {
	rec, err := e.watch(ctx, e.proxies[t], fmt.Sprintf("%s-%s-rep%d", t, name, e.rep+1))
	if err != nil {
		return loadgen.Reply{}, cost{}, err
	}
	rep, err := e.job(ctx, req)
	c, cerr := rec.finish()
	if err != nil {
		return loadgen.Reply{}, cost{}, err
	}
	if cerr != nil {
		return loadgen.Reply{}, cost{}, cerr
	}
	return rep, c, nil
}

func (e *env) bulk(ctx context.Context, r Run, t string) error {
	_, sink := e.targetAddrs(t)
	for _, n := range []int{1, 8} {
		name := fmt.Sprintf("bulk%d", n)
		rep, c, err := e.watched(ctx, t, name, loadgen.Request{Op: "bulk", Addrs: sink, N: n, Seconds: e.opts.Seconds})
		if err != nil {
			return err
		}
		r.set(t, name+"_gbps", rep.Bulk.BitsPerSec/1e9)
		r.setCost(t, name+"_gib", c, float64(rep.Bulk.Bytes)/(1<<30))
	}
	return nil
}

func (e *env) churn(ctx context.Context, r Run, t string) error {
	echo, _ := e.targetAddrs(t)
	rep, c, err := e.watched(ctx, t, "churn", loadgen.Request{Op: "churn", Addrs: echo, N: 4, Seconds: e.opts.Seconds})
	if err != nil {
		return err
	}
	r.setCost(t, "churn", c, float64(rep.Churn.Conns+rep.Churn.Errors))
	if rep.Churn.Errors > 0 {
		e.log.Warn("failed connections during churn", "target", t, "errors", rep.Churn.Errors, "ok", rep.Churn.Conns)
	}
	r.set(t, "conn_per_s", rep.Churn.PerSec)
	r.set(t, "connect_p99_us", rep.Churn.ConnectP99)
	r.set(t, "exchange_p99_us", rep.Churn.TxP99)
	return nil
}

func (e *env) rr(ctx context.Context, r Run, t string) error {
	echo, _ := e.targetAddrs(t)
	for _, n := range []int{1, 8} {
		name := fmt.Sprintf("rr%d", n)
		rep, c, err := e.watched(ctx, t, name, loadgen.Request{Op: "rr", Addrs: echo, N: n, Seconds: e.opts.Seconds})
		if err != nil {
			return err
		}
		r.setCost(t, name, c, float64(rep.RR.Requests))
		r.set(t, fmt.Sprintf("rr%d_p50_us", n), rep.RR.P50)
		r.set(t, fmt.Sprintf("rr%d_p99_us", n), rep.RR.P99)
		r.set(t, fmt.Sprintf("rr%d_per_s", n), rep.RR.PerSec)
	}
	return nil
}

// idleSettle lets the proxy finish the last connects, and its sessions
// go cold (halb parks a session quiet for a second), before a reading.
const idleSettle = 2 * time.Second

// idle opens many idle connections through t and reads what they cost:
// the proxy's RSS and fds, and the machine's slab, before and after.
func (e *env) idle(ctx context.Context, r Run, t string) error {
	pid := e.proxies[t]
	var before usage
	var err error
	if pid != 0 {
		if before, err = readUsage(pid); err != nil {
			return err
		}
	}
	slab0, err := slabBytes()
	if err != nil {
		return err
	}
	echo, _ := e.targetAddrs(t)
	rep, err := e.job(ctx, loadgen.Request{Op: "hold", Addrs: echo, N: e.opts.IdleConns})
	if err != nil {
		return err
	}
	sleep(ctx, idleSettle)
	slab1, serr := slabBytes()
	var after usage
	if pid != 0 && serr == nil {
		after, serr = readUsage(pid)
	}
	if _, err := e.job(ctx, loadgen.Request{Op: "release"}); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	n := float64(rep.Opened)
	if rep.Opened < e.opts.IdleConns {
		e.log.Warn("fewer idle connections than asked", "target", t, "opened", rep.Opened, "asked", e.opts.IdleConns)
	}
	r.set(t, "idle_opened", n)
	r.set(t, "idle_slab_kib", float64(slab1-slab0)/1024/n)
	if pid != 0 {
		r.set(t, "idle_rss_kib", float64(after.rss-before.rss)/1024/n)
		r.set(t, "idle_fds", float64(after.fds-before.fds)/n)
		// The next reading starts once the proxy has closed its side.
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			u, err := readUsage(pid)
			if err != nil || u.fds <= before.fds+8 {
				break
			}
			sleep(ctx, 50*time.Millisecond)
		}
	}
	sleep(ctx, idleSettle)
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// command runs a short command, bounded, and returns its output.
func command(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %v: %w: %s", name, args, err, out)
	}
	return out, nil
}
