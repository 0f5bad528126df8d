package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"halb/internal/config"
	"halb/internal/health"
	"halb/test/support"
)

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	b := []*testBackend{
		startBackend(t, "s0", "127.0.0.11", modeEcho),
		startBackend(t, "s1", "127.0.0.12", modeEcho),
		startBackend(t, "s2", "127.0.0.13", modeEcho),
	}
	p := newPool(config.RoundRobin, b[0].server(), b[1].server(), b[2].server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	got := map[string]int{}
	for range 1000 {
		c := dial(t, fe.addr)
		got[c.greeting(t)]++
		_ = c.Close()
	}
	for _, s := range []string{"s0", "s1", "s2"} {
		if !within(got[s], 333, 0.10) {
			t.Fatalf("spread %v, want each within ±10%% of 333", got)
		}
	}
}

func TestWeightsThroughProxy(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	b1 := startBackend(t, "s1", "127.0.0.12", modeEcho)
	s1 := b1.server()
	s1.Weight = 3
	p := newPool(config.RoundRobin, b0.server(), s1)
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	got := map[string]int{}
	for range 400 {
		c := dial(t, fe.addr)
		got[c.greeting(t)]++
		_ = c.Close()
	}
	if !within(got["s0"], 100, 0.10) || !within(got["s1"], 300, 0.10) {
		t.Fatalf("spread %v, want about 100/300 for weights 1/3", got)
	}
}

func TestLeastConnThroughProxy(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	b1 := startBackend(t, "s1", "127.0.0.12", modeEcho)
	p := newPool(config.LeastConn, b0.server(), b1.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	// Four long sessions spread two and two.
	held := map[string][]*conn{}
	for range 4 {
		c := dial(t, fe.addr)
		name := c.greeting(t)
		held[name] = append(held[name], c)
	}
	if len(held["s0"]) != 2 || len(held["s1"]) != 2 {
		t.Fatalf("open sessions s0=%d s1=%d, want 2 and 2", len(held["s0"]), len(held["s1"]))
	}
	// s1's sessions end: the next two must go to s1, which has none.
	for _, c := range held["s1"] {
		_ = c.Close()
	}
	waitActive(t, p.Servers()[1], 0)
	for range 2 {
		c := dial(t, fe.addr)
		if name := c.greeting(t); name != "s1" {
			t.Fatalf("picked %s, want s1 with fewer active connections", name)
		}
	}
	if a := p.Servers()[0].Stats().Active; a != 2 {
		t.Fatalf("s0 active %d, want 2", a)
	}
}

func waitActive(t *testing.T, s interface{ Stats() poolStats }, want int64) {
	t.Helper()
	if !support.Eventually(5*time.Second, func() bool { return s.Stats().Active == want }) {
		t.Fatalf("active %d, want %d", s.Stats().Active, want)
	}
}

func TestSourceSticksPerClient(t *testing.T) {
	b := []*testBackend{
		startBackend(t, "s0", "127.0.0.11", modeEcho),
		startBackend(t, "s1", "127.0.0.12", modeEcho),
		startBackend(t, "s2", "127.0.0.13", modeEcho),
	}
	p := newPool(config.Source, b[0].server(), b[1].server(), b[2].server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	first := map[string]string{}
	for i := range 12 {
		ip := fmt.Sprintf("127.0.1.%d", i+1)
		for range 5 {
			c := dialFrom(t, fe.addr, ip)
			name := c.greeting(t)
			_ = c.Close()
			if prev, ok := first[ip]; ok && prev != name {
				t.Fatalf("client %s went to %s, then %s", ip, prev, name)
			}
			first[ip] = name
		}
	}
	// Kill one server: only its clients move (after the one retry).
	victim := first["127.0.1.1"]
	for _, x := range b {
		if x.name == victim {
			x.kill()
		}
	}
	for i := range 12 {
		ip := fmt.Sprintf("127.0.1.%d", i+1)
		c := dialFrom(t, fe.addr, ip)
		name := c.greeting(t)
		_ = c.Close()
		if first[ip] != victim && name != first[ip] {
			t.Fatalf("client %s moved from %s to %s though its server lives", ip, first[ip], name)
		}
		if name == victim {
			t.Fatalf("client %s reached the killed server", ip)
		}
	}
}

func TestBackendKilledMidwayCostsNoClient(t *testing.T) {
	b := []*testBackend{
		startBackend(t, "s0", "127.0.0.11", modeEcho),
		startBackend(t, "s1", "127.0.0.12", modeEcho),
		startBackend(t, "s2", "127.0.0.13", modeEcho),
	}
	p := newPool(config.RoundRobin, b[0].server(), b[1].server(), b[2].server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	got := map[string]int{}
	for i := range 1000 {
		if i == 500 {
			b[2].kill()
		}
		c := dial(t, fe.addr)
		name, err := c.line()
		if err != nil {
			t.Fatalf("connection %d failed: %v", i, err)
		}
		c.echo(t, "ping")
		got[name]++
		_ = c.Close()
	}
	if !within(got["s0"], got["s1"], 0.10) {
		t.Fatalf("live servers got %v, want within ±10%% of each other", got)
	}
	if got["s0"]+got["s1"]+got["s2"] != 1000 {
		t.Fatalf("counts %v do not add up to 1000", got)
	}
	st := p.Servers()[2].Stats()
	if st.Up || st.ConnectFailures != 1 {
		t.Fatalf("killed server up=%v connect failures=%d, want down after exactly 1 failure", st.Up, st.ConnectFailures)
	}
	if fe.Stats().Total != 1000 {
		t.Fatalf("total %d, want 1000", fe.Stats().Total)
	}
	// One log line per connection, none of them a failure. (The session
	// open on s2 when it was killed may see the server's close first.)
	for _, r := range fe.log.waitConns(t, 1000) {
		if r["end"] != "client closed" && r["end"] != "server closed" {
			t.Fatalf("connection ended with %q: %v", r["end"], r)
		}
	}
}

// blackholeDialer makes connects to one address hang until their timeout,
// as to a host that drops SYNs, without sending anything anywhere.
type blackholeDialer struct {
	hole  string
	dials atomic.Int32
	d     net.Dialer
}

func (b *blackholeDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if addr == b.hole {
		b.dials.Add(1)
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
	}
	return b.d.DialContext(ctx, network, addr)
}

// A server that drops SYNs costs passive_fall clients one connect timeout
// each (each then served by the next server), and no client after that.
func TestBlackholedBackendCostsPassiveFallTimeouts(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	hole := config.Server{Name: "hole", Address: netipAddrPort(t, "127.0.0.99:9"), Weight: 1}
	p := newPool(config.RoundRobin, hole, b0.server())
	d := &blackholeDialer{hole: "127.0.0.99:9"}
	tm := testTimeouts()
	tm.Connect = 200 * time.Millisecond
	fe := startFrontend(t, p, Options{Timeouts: tm, Dialer: d})
	want := config.DefaultPassiveFall
	// The blackhole's dials count the connect timeouts exactly; a wall
	// clock would count sessions that load made slow too. Time is only
	// a lower bound: a session that met the blackhole waited it out.
	for i := range 30 {
		start, before := time.Now(), d.dials.Load()
		c := dial(t, fe.addr)
		if name := c.greeting(t); name != "s0" {
			t.Fatalf("reached %s", name)
		}
		c.echo(t, "x")
		_ = c.Close()
		holed := int(d.dials.Load())
		if took := time.Since(start); holed > int(before) && took < tm.Connect {
			t.Errorf("client %d met the blackhole but was served after %s, before the %s connect timeout", i, took, tm.Connect)
		}
		if up := p.Servers()[0].Up(); up != (holed < want) {
			t.Fatalf("after client %d and %d connect timeouts the blackholed server is up=%v; passive_fall is %d", i, holed, up, want)
		}
	}
	if n := d.dials.Load(); n != int32(want) {
		t.Fatalf("%d connects to the blackhole, want %d (passive_fall)", n, want)
	}
	if got := p.Servers()[1].Stats().Retries; got != int64(want) {
		t.Fatalf("s0 retries %d, want %d", got, want)
	}
}

func TestPassiveMarkDownThenRiseFromChecks(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	b1 := startBackend(t, "s1", "127.0.0.12", modeEcho)
	p := newPool(config.RoundRobin, b0.server(), b1.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	b1.kill()
	for range 10 {
		c := dial(t, fe.addr)
		if name := c.greeting(t); name != "s0" {
			t.Fatalf("reached %s", name)
		}
		_ = c.Close()
	}
	s1 := p.Servers()[1]
	if s1.Up() {
		t.Fatal("refusing server still up")
	}
	b1.restart()
	s1.ReportCheck(health.Result{OK: true})
	c := dial(t, fe.addr)
	if c.greeting(t) != "s0" {
		t.Fatal("server back after one success; rise is 2")
	}
	_ = c.Close()
	s1.ReportCheck(health.Result{OK: true})
	got := map[string]int{}
	for range 10 {
		c := dial(t, fe.addr)
		got[c.greeting(t)]++
		_ = c.Close()
	}
	if got["s1"] != 5 {
		t.Fatalf("after rise got %v, want s1 back in rotation (5 of 10)", got)
	}
}

func TestAllServersRefuseBoundedAttempts(t *testing.T) {
	var servers []config.Server
	var bs []*testBackend
	for i := range 5 {
		b := startBackend(t, fmt.Sprintf("s%d", i), fmt.Sprintf("127.0.0.%d", 11+i), modeEcho)
		bs = append(bs, b)
		servers = append(servers, b.server())
	}
	p := newPool(config.RoundRobin, servers...) // retries 2: three attempts
	for _, b := range bs {
		b.kill()
	}
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	expectRejected(t, fe.addr, 5*time.Second)
	r := fe.log.waitEnd(t, "connect failed")
	if r["server"] == "" {
		t.Fatalf("connect failed line names no server: %v", r)
	}
	var failures int64
	for _, s := range p.Servers() {
		failures += s.Stats().ConnectFailures
	}
	if failures != 3 {
		t.Fatalf("%d connect attempts, want 3 (retries 2 + 1)", failures)
	}
}

func TestNoHealthyServerClosesAtOnce(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	p.Servers()[0].MarkDown("test")
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	expectRejected(t, fe.addr, time.Second)
	fe.log.waitEnd(t, "no healthy server")
	if n := b0.accepted.Load(); n != 0 {
		t.Fatalf("down server got %d connections", n)
	}
}

func TestHalfClose(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeReplyAfterEOF)
	p := newPool(config.RoundRobin, b0.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	c := dial(t, fe.addr)
	c.greeting(t)
	if _, err := io.WriteString(c, "hello world"); err != nil {
		t.Fatal(err)
	}
	if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := c.line()
	if err != nil || reply != "got 11" {
		t.Fatalf("reply %q, %v; want %q after half-close", reply, err, "got 11")
	}
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Fatalf("after reply: %v, want EOF", err)
	}
	r := fe.log.waitEnd(t, "client closed")
	if r["bytes_in"] != "11" || r["bytes_out"] != "10" {
		t.Fatalf("bytes in/out %s/%s, want 11/10 (greeting 3 + reply 7)", r["bytes_in"], r["bytes_out"])
	}
}

func TestIdleTimeouts(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
		p := newPool(config.RoundRobin, b0.server())
		tm := testTimeouts()
		tm.ClientIdle = 200 * time.Millisecond
		fe := startFrontend(t, p, Options{Timeouts: tm})
		c := dial(t, fe.addr)
		c.greeting(t)
		start := time.Now()
		c.expectClosed(t, 5*time.Second)
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("closed after %s, before the idle timeout", d)
		}
		fe.log.waitEnd(t, "client idle timeout")
	})
	t.Run("server", func(t *testing.T) {
		b0 := startBackend(t, "s0", "127.0.0.11", modeSink)
		p := newPool(config.RoundRobin, b0.server())
		tm := testTimeouts()
		tm.ServerIdle = 200 * time.Millisecond
		fe := startFrontend(t, p, Options{Timeouts: tm})
		c := dial(t, fe.addr)
		c.greeting(t)
		c.expectClosed(t, 5*time.Second)
		fe.log.waitEnd(t, "server idle timeout")
	})
	t.Run("activity keeps the session", func(t *testing.T) {
		b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
		p := newPool(config.RoundRobin, b0.server())
		tm := testTimeouts()
		tm.ClientIdle = 600 * time.Millisecond
		tm.ServerIdle = 600 * time.Millisecond
		fe := startFrontend(t, p, Options{Timeouts: tm})
		c := dial(t, fe.addr)
		c.greeting(t)
		// Three idle timeouts' worth of echoes with short pauses: the
		// session lives only if each exchange restarts the idle clock. A
		// pause is an eighth of the timeout, so load that stretches it
		// several times over still leaves the session active. The close
		// follows an echo at once, leaving the proxy a whole idle timeout
		// to see it before the server side could time out instead.
		end := time.Now().Add(3 * tm.ClientIdle)
		for i := 0; time.Now().Before(end) && i < 100; i++ {
			time.Sleep(tm.ClientIdle / 8) // the client's think time, a stimulus
			c.echo(t, "tick")
		}
		_ = c.Close()
		fe.log.waitEnd(t, "client closed")
	})
}

func TestMaxConnPerFrontend(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()}, func(f *config.Frontend) { f.MaxConn = 2 })
	a, b := dial(t, fe.addr), dial(t, fe.addr)
	a.greeting(t)
	b.greeting(t)
	expectRejected(t, fe.addr, time.Second)
	fe.log.waitEnd(t, "maxconn")
	if st := fe.Stats(); st.Rejected != 1 || st.Current != 2 {
		t.Fatalf("stats %+v, want 1 rejected and 2 current", st)
	}
	a.echo(t, "still here")
	_ = a.Close()
	waitCurrent(t, fe.Frontend, 1)
	c := dial(t, fe.addr)
	c.greeting(t)
}

func TestMaxConnGlobal(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	lim := NewLimiter(2)
	opts := Options{Timeouts: testTimeouts(), Limit: lim}
	fe1 := startFrontend(t, p, opts)
	fe2 := startFrontend(t, p, opts)
	dial(t, fe1.addr).greeting(t)
	dial(t, fe2.addr).greeting(t)
	expectRejected(t, fe2.addr, time.Second)
	if fe2.Stats().Rejected != 1 || fe1.Stats().Rejected != 0 {
		t.Fatalf("rejected %d/%d, want 0/1", fe1.Stats().Rejected, fe2.Stats().Rejected)
	}
	if lim.Current() != 2 || lim.Max() != 2 {
		t.Fatalf("limiter %d/%d, want 2/2", lim.Current(), lim.Max())
	}
}

func waitCurrent(t *testing.T, f *Frontend, want int64) {
	t.Helper()
	if !support.Eventually(5*time.Second, func() bool { return f.Stats().Current == want }) {
		t.Fatalf("current %d, want %d", f.Stats().Current, want)
	}
}

func TestCloseOnDown(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	b1 := startBackend(t, "s1", "127.0.0.12", modeEcho)
	p := newPool(config.RoundRobin, b0.server(), b1.server())
	cfg := p.Config()
	cfg.CloseOnDown = true
	p = newPoolFrom(cfg)
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	var on0, on1 *conn
	for on0 == nil || on1 == nil {
		c := dial(t, fe.addr)
		if c.greeting(t) == "s0" {
			on0 = c
		} else {
			on1 = c
		}
	}
	for range 3 { // fall 3
		p.Servers()[0].ReportCheck(health.Result{OK: false, Reason: "503"})
	}
	on0.expectClosed(t, 5*time.Second)
	fe.log.waitEnd(t, "server down")
	on1.echo(t, "unaffected")
}

func TestGracefulDrain(t *testing.T) {
	t.Run("open session finishes", func(t *testing.T) {
		b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
		p := newPool(config.RoundRobin, b0.server())
		fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
		c := dial(t, fe.addr)
		c.greeting(t)
		fe.cancel()
		// The listener closes: new connections are refused.
		support.WaitUntil(t, 5*time.Second, func() bool {
			nc, err := net.DialTimeout("tcp4", fe.addr, time.Second)
			if err != nil {
				return true
			}
			_ = nc.Close()
			return false
		}, "the listener to close after cancel")
		c.echo(t, "still served while draining")
		select {
		case err := <-fe.done:
			t.Fatalf("Run returned %v with a session open and drain time left", err)
		default:
		}
		_ = c.Close()
		select {
		case err := <-fe.done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			close(fe.done)
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after the last session ended")
		}
	})
	t.Run("sessions beyond grace are closed", func(t *testing.T) {
		b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
		p := newPool(config.RoundRobin, b0.server())
		tm := testTimeouts()
		tm.Drain = 300 * time.Millisecond
		fe := startFrontend(t, p, Options{Timeouts: tm})
		c := dial(t, fe.addr)
		c.greeting(t)
		start := time.Now()
		fe.stop(t)
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("Run returned after %s, before the drain grace", d)
		}
		c.expectClosed(t, time.Second)
		fe.log.waitEnd(t, "drained")
	})
}

func TestConnectionLogLine(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	p := newPool(config.RoundRobin, b0.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts(), ConnLog: true})
	c := dial(t, fe.addr)
	c.greeting(t)
	c.echo(t, "abc")
	_ = c.Close()
	r := fe.log.waitEnd(t, "client closed")
	want := map[string]string{
		"level": "INFO", "frontend": "fe", "backend": "be", "server": "s0",
		"client": c.LocalAddr().String(), "bytes_in": "4", "bytes_out": "7",
	}
	for k, v := range want {
		if r[k] != v {
			t.Fatalf("%s=%q, want %q in %v", k, r[k], v, r)
		}
	}
	for _, k := range []string{"connect_ms", "duration"} {
		if _, ok := r[k]; !ok {
			t.Fatalf("no %s in %v", k, r)
		}
	}
	st := fe.Stats()
	if st.BytesIn != 4 || st.BytesOut != 7 || st.Total != 1 || st.Name != "fe" {
		t.Fatalf("stats %+v", st)
	}
	if s := p.Servers()[0].Stats(); s.BytesIn != 4 || s.BytesOut != 7 {
		t.Fatalf("server bytes %d/%d, want 4/7", s.BytesIn, s.BytesOut)
	}
}

func TestConcurrentSessions(t *testing.T) {
	b0 := startBackend(t, "s0", "127.0.0.11", modeEcho)
	b1 := startBackend(t, "s1", "127.0.0.12", modeEcho)
	p := newPool(config.LeastConn, b0.server(), b1.server())
	fe := startFrontend(t, p, Options{Timeouts: testTimeouts()})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp4", fe.addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer func() { _ = c.Close() }()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := strings.Repeat(fmt.Sprint(i), 1000)
			if _, err := io.WriteString(c, msg); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, 3+len(msg))
			if _, err := io.ReadFull(c, buf); err != nil {
				errs <- err
				return
			}
			if string(buf[3:]) != msg {
				errs <- fmt.Errorf("session %d: echo mismatch", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestDrainAbortsConnectInProgress(t *testing.T) {
	hole := config.Server{Name: "hole", Address: netipAddrPort(t, "127.0.0.99:9"), Weight: 1}
	p := newPool(config.RoundRobin, hole)
	d := &blackholeDialer{hole: "127.0.0.99:9"}
	tm := testTimeouts()
	tm.Connect = time.Minute
	tm.Drain = 100 * time.Millisecond
	fe := startFrontend(t, p, Options{Timeouts: tm, Dialer: d})
	c := dial(t, fe.addr)
	if !support.Eventually(5*time.Second, func() bool { return d.dials.Load() != 0 }) {
		t.Fatal("no connect attempt within 5s")
	}
	fe.stop(t)
	c.expectClosed(t, time.Second)
	fe.log.waitEnd(t, "drained")
	if !p.Servers()[0].Up() {
		t.Fatal("an aborted connect on shutdown marked the server down")
	}
}
