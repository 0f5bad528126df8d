//go:build soak

package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"halb/test/support"
)

// Loopback addresses of the soak: halb's listeners and the echo backends.
const (
	frontIP      = "127.0.0.20"
	sampleEvery  = 5 * time.Second
	pingPerTick  = 300 // connections asked for an echo each sample
	churnPerTick = 50  // connections closed and opened again each sample
)

var backendIPs = []string{"127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"}

// sample is halb's resource use at one moment.
type sample struct {
	AtSeconds  float64 `json:"at_s"`
	RSSBytes   int64   `json:"rss_bytes"`
	FDs        int     `json:"fds"`
	Goroutines int     `json:"goroutines"`
	Open       int     `json:"client_conns"`
}

// result is what SOAK_OUT receives.
type result struct {
	Conns      int      `json:"conns"`
	Duration   string   `json:"duration"`
	WarmUp     string   `json:"warm_up"`
	Idle       sample   `json:"idle"`
	Baseline   sample   `json:"baseline"`
	Max        sample   `json:"max"`
	After      sample   `json:"after_close"`
	Pings      int64    `json:"pings"`
	Reopened   int64    `json:"reopened"`
	Lost       int64    `json:"lost"`
	Violations []string `json:"violations"`
	Samples    []sample `json:"samples"`
}

func envOr(t *testing.T, key, def string) string {
	t.Helper()
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// TestSoakConns holds SOAK_CONNS (default 6000) connections through the real
// halb for SOAK_DURATION (default 10m), echoing on a share of them and
// replacing others every few seconds, and fails if halb's RSS, open files
// or goroutines grow beyond a bound after warm-up, or do not come back
// down once the clients leave.
func TestSoakConns(t *testing.T) {
	bin := os.Getenv("HALB_BIN")
	if bin == "" {
		t.Fatal("HALB_BIN is not set: run `make soak-conns`, which builds bin/halb")
	}
	dur, err := time.ParseDuration(envOr(t, "SOAK_DURATION", "10m"))
	if err != nil {
		t.Fatalf("SOAK_DURATION: %v", err)
	}
	conns, err := strconv.Atoi(envOr(t, "SOAK_CONNS", "6000"))
	if err != nil || conns < 1 {
		t.Fatalf("SOAK_CONNS %q: want a positive number", os.Getenv("SOAK_CONNS"))
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// This process holds a client and a backend socket per connection,
	// halb a client and a server socket: each needs twice conns.
	if need := uint64(2*conns + 500); need > lim.Cur {
		t.Fatalf("SOAK_CONNS=%d needs %d open files per process; the limit is %d (ulimit -n)", conns, need, lim.Cur)
	}

	backends := make([]string, len(backendIPs))
	for i, ip := range backendIPs {
		backends[i] = startEcho(t, ip)
	}
	dir := t.TempDir()
	front, metrics := freePort(t), freePort(t)
	cfgPath := writeConfig(t, dir, conns, front, metrics, backends)
	pid := startHalb(t, bin, cfgPath, filepath.Join(dir, "halb.log"))
	sampler := &sampler{pid: pid, metrics: fmt.Sprintf("http://%s:%d/metrics", frontIP, metrics)}
	addr := net.JoinHostPort(frontIP, strconv.Itoa(front))

	// Backends become usable once halb's first checks pass.
	support.WaitUntil(t, 30*time.Second, func() bool {
		c, err := open(addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, "a first proxied echo")
	start := time.Now()
	res := result{Conns: conns, Duration: dur.String()}
	res.Idle = sampler.take(t, start, 0)
	t.Logf("idle: rss %.1f MiB, %d fds, %d goroutines", mib(res.Idle.RSSBytes), res.Idle.FDs, res.Idle.Goroutines)

	pool := openAll(t, addr, conns)
	defer pool.closeAll()
	t.Logf("%d connections open after %s", conns, time.Since(start).Round(time.Millisecond))

	warm := max(time.Minute, dur/10)
	res.WarmUp = warm.String()
	holdStart := time.Now()
	var pings, reopened, lost atomic.Int64
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	next := 0
	for time.Since(holdStart) < dur {
		<-tick.C
		s := sampler.take(t, start, pool.len())
		res.Samples = append(res.Samples, s)
		p, r, l := pool.exercise(addr, next, pingPerTick, churnPerTick)
		next += pingPerTick
		pings.Add(p)
		reopened.Add(r)
		lost.Add(l)
		if len(res.Samples)%12 == 0 {
			t.Logf("%s: rss %.1f MiB, %d fds, %d goroutines, %d open, %d lost", time.Since(holdStart).Round(time.Second),
				mib(s.RSSBytes), s.FDs, s.Goroutines, s.Open, lost.Load())
		}
	}
	// Every connection still answers at the end.
	lost.Add(pool.checkAll())
	res.Pings, res.Reopened, res.Lost = pings.Load(), reopened.Load(), lost.Load()

	warmEnd := holdStart.Sub(start) + warm
	var steady []sample
	for _, s := range res.Samples {
		if time.Duration(s.AtSeconds*float64(time.Second)) >= warmEnd {
			steady = append(steady, s)
		}
	}
	if len(steady) < 4 {
		t.Fatalf("only %d samples after the %s warm-up: run longer (SOAK_DURATION)", len(steady), warm)
	}
	res.Baseline = steady[0]
	res.Violations = steadyViolations(steady, conns)
	if res.Lost > 0 {
		res.Violations = append(res.Violations, fmt.Sprintf("%d connections stopped echoing", res.Lost))
	}
	for _, s := range steady {
		res.Max.RSSBytes = max(res.Max.RSSBytes, s.RSSBytes)
		res.Max.FDs = max(res.Max.FDs, s.FDs)
		res.Max.Goroutines = max(res.Max.Goroutines, s.Goroutines)
	}

	// Clients leave: halb must give back its sockets and goroutines.
	pool.closeAll()
	var after sample
	back := func() bool {
		after = sampler.take(t, start, 0)
		return after.FDs <= res.Idle.FDs+16 && after.Goroutines <= res.Idle.Goroutines+16
	}
	ok := support.Eventually(30*time.Second, back)
	res.After = after
	if !ok {
		res.Violations = append(res.Violations, fmt.Sprintf("after the clients left: %d fds and %d goroutines, idle was %d and %d",
			after.FDs, after.Goroutines, res.Idle.FDs, res.Idle.Goroutines))
	}

	t.Logf("baseline after warm-up: rss %.1f MiB, %d fds, %d goroutines", mib(res.Baseline.RSSBytes), res.Baseline.FDs, res.Baseline.Goroutines)
	t.Logf("max after warm-up:      rss %.1f MiB, %d fds, %d goroutines", mib(res.Max.RSSBytes), res.Max.FDs, res.Max.Goroutines)
	t.Logf("after close:            rss %.1f MiB, %d fds, %d goroutines", mib(res.After.RSSBytes), res.After.FDs, res.After.Goroutines)
	t.Logf("per connection: %.1f KiB rss; %d echoes, %d reopened, %d lost",
		float64(res.Baseline.RSSBytes-res.Idle.RSSBytes)/float64(conns)/1024, res.Pings, res.Reopened, res.Lost)
	if out := os.Getenv("SOAK_OUT"); out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Errorf("write %s: %v", out, err)
		}
	}
	for _, v := range res.Violations {
		t.Error(v)
	}
}

// steadyViolations checks the samples after warm-up against bounds: open
// files and goroutines stay within a small slack of the first steady sample
// (connections are replaced one at a time, so few are ever in flight), and
// memory neither jumps nor creeps up.
func steadyViolations(steady []sample, conns int) []string {
	var out []string
	base := steady[0]
	slack := 64 + conns/50
	for _, s := range steady {
		if s.FDs > base.FDs+slack {
			out = append(out, fmt.Sprintf("at %.0fs: %d open files, baseline %d (+%d allowed)", s.AtSeconds, s.FDs, base.FDs, slack))
		}
		if s.Goroutines > base.Goroutines+slack {
			out = append(out, fmt.Sprintf("at %.0fs: %d goroutines, baseline %d (+%d allowed)", s.AtSeconds, s.Goroutines, base.Goroutines, slack))
		}
		if limit := base.RSSBytes + base.RSSBytes/4 + 16<<20; s.RSSBytes > limit {
			out = append(out, fmt.Sprintf("at %.0fs: rss %.1f MiB, over the bound %.1f MiB", s.AtSeconds, mib(s.RSSBytes), mib(limit)))
		}
	}
	q := max(len(steady)/4, 1)
	first, last := meanRSS(steady[:q]), meanRSS(steady[len(steady)-q:])
	if last > first+first/10+8<<20 {
		out = append(out, fmt.Sprintf("rss creeps up: mean %.1f MiB in the first quarter, %.1f MiB in the last", mib(first), mib(last)))
	}
	return out
}

func meanRSS(ss []sample) int64 {
	var sum int64
	for _, s := range ss {
		sum += s.RSSBytes
	}
	return sum / int64(len(ss))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// startEcho runs an echo server on ip with a small read buffer per
// connection (io.Copy would splice through a pipe: two more files each).
func startEcho(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 256)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				_ = c.Close()
				mu.Lock()
				delete(open, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", frontIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

func writeConfig(t *testing.T, dir string, conns, front, metrics int, backends []string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("soak"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "log: {level: warn, connections: false}\nmaxconn: %d\n", conns+1000)
	b.WriteString("timeouts: {connect: 2s, client_idle: 1h, server_idle: 1h, drain: 1s}\n")
	fmt.Fprintf(&b, "frontends:\n  - {name: soak, bind: \"%s:%d\", backend: echo}\n", frontIP, front)
	b.WriteString("backends:\n  - name: echo\n    balance: leastconn\n    health: {type: tcp, interval: 2s, timeout: 1s, rise: 1}\n    servers:\n")
	for i, a := range backends {
		fmt.Fprintf(&b, "      - {name: e%d, address: \"%s\"}\n", i+1, a)
	}
	fmt.Fprintf(&b, "stats:\n  bind: \"%s:%d\"\n  metrics_bind: \"%s:%d\"\n  users: [{name: soak, password_hash: %q}]\n",
		frontIP, freePort(t), frontIP, metrics, hash)
	fmt.Fprintf(&b, "admin: {socket: %q}\n", filepath.Join(dir, "admin.sock"))
	path := filepath.Join(dir, "halb.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startHalb runs halb and stops it, by its pid, when the test ends.
func startHalb(t *testing.T, bin, cfg, logPath string) int {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfg, "--node", "soak")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("halb exited with %v; log in %s", err, logPath)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Logf("halb killed: %v", <-done)
			t.Errorf("halb did not stop within 15s of SIGTERM")
		}
		_ = logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("halb log:\n%s", tail(b, 40))
			}
		}
	})
	return cmd.Process.Pid
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// sampler reads halb's resource use from /proc and its metrics.
type sampler struct {
	pid     int
	metrics string
}

func (s *sampler) take(t *testing.T, start time.Time, open int) sample {
	t.Helper()
	out := sample{AtSeconds: time.Since(start).Seconds(), Open: open}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		t.Fatalf("halb is gone: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			out.RSSBytes = kb << 10
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.pid))
	if err != nil {
		t.Fatalf("count halb's files: %v", err)
	}
	out.FDs = len(fds)
	out.Goroutines = s.goroutines(t)
	return out
}

func (s *sampler) goroutines(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.metrics, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("read halb's metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(rest, 64)
			return int(n)
		}
	}
	t.Fatal("no go_goroutines in halb's metrics")
	return 0
}

// open dials the frontend and proves the connection reaches a backend.
func open(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if err := echo(c); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func echo(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write([]byte("p\n")); err != nil {
		return err
	}
	var buf [2]byte
	if _, err := io.ReadFull(c, buf[:]); err != nil {
		return err
	}
	if string(buf[:]) != "p\n" {
		return fmt.Errorf("echo %q", buf)
	}
	return nil
}

// connPool is the soak's client connections.
type connPool struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (p *connPool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func openAll(t *testing.T, addr string, n int) *connPool {
	t.Helper()
	p := &connPool{conns: make([]net.Conn, n)}
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	const workers = 32
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				c, err := open(addr)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				p.conns[i] = c
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		p.closeAll()
		t.Fatalf("%d of %d connections could not be opened: first error %v", f, n, firstErr.Load())
	}
	return p
}

// exercise echoes on ping connections starting at from, then replaces
// churn of them with new ones. It returns echoes done, connections
// reopened and connections that failed either.
func (p *connPool) exercise(addr string, from, ping, churn int) (pings, reopened, lost int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	if n == 0 {
		return 0, 0, 0
	}
	for k := range ping {
		if err := echo(p.conns[(from+k)%n]); err != nil {
			lost++
			continue
		}
		pings++
	}
	for k := range churn {
		i := (from + k) % n
		_ = p.conns[i].Close()
		c, err := open(addr)
		if err != nil {
			lost++
			// Keep a closed conn in the slot: later echoes count it again,
			// which is what should happen to a lost connection.
			continue
		}
		p.conns[i] = c
		reopened++
	}
	return pings, reopened, lost
}

// checkAll echoes on every connection and returns how many failed.
func (p *connPool) checkAll() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lost int64
	for _, c := range p.conns {
		if echo(c) != nil {
			lost++
		}
	}
	return lost
}

func (p *connPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if c != nil {
			_ = c.Close()
		}
	}
	p.conns = slices.Delete(p.conns, 0, len(p.conns))
}
