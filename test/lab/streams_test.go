package lab

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"halb/test/fakecp"
	"halb/test/support"
)

// startCP runs an authenticating fake control plane on ip with a fresh PKI.
func startCP(t *testing.T, ip string) (*fakecp.Server, string) {
	t.Helper()
	dir := t.TempDir()
	addr := netip.MustParseAddr(ip)
	if err := fakecp.WritePKI(dir, addr, []netip.Addr{addr}); err != nil {
		t.Fatal(err)
	}
	s := fakecp.New(fakecp.Options{Name: "cp1", PKIDir: dir,
		HTTPS: []netip.AddrPort{netip.AddrPortFrom(addr, 0)}, TLS: []netip.AddrPort{netip.AddrPortFrom(addr, 0)}},
		slog.New(slog.DiscardHandler))
	support.Go(t, s.Run).AwaitReady(t, s.Ready(), 5*time.Second)
	return s, dir
}

func streamsOptions(s *fakecp.Server, dir string) StreamsOptions {
	api, tlsAddrs := s.Addrs()
	kc, kk, _ := fakecp.ClientFiles(dir, fakecp.KubeAdmin)
	tc, tk, _ := fakecp.ClientFiles(dir, fakecp.TalosAdmin)
	return StreamsOptions{API: api[0], Talos: tlsAddrs[0], Watches: 2, TalosStreams: 2,
		K8sCert: kc, K8sKey: kk, TalosCert: tc, TalosKey: tk,
		ReopenPause: 10 * time.Millisecond, ConnectTimeout: time.Second, Stall: 3 * time.Second}
}

// A server that ends its streams itself (a graceful shutdown) is a clean
// end, never a cut, for watches and Talos streams alike.
func TestStreamsCleanEndsOnGracefulShutdown(t *testing.T) {
	s, dir := startCP(t, "127.0.0.71")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	done := make(chan StreamsReport, 1)
	o := streamsOptions(s, dir)
	opened := make(chan struct{}, 64)
	o.Opened = func() { opened <- struct{}{} }
	go func() {
		rep, err := RunStreams(ctx, o, func() { close(started) })
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	<-started
	// Shut down only once all four streams are open: one still opening
	// would fail to open, not end cleanly.
	for range o.Watches + o.TalosStreams {
		support.Receive(t, opened, 10*time.Second, "a stream to open")
	}
	if err := s.Shutdown(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 10*time.Second, func() (bool, error) { return s.Status().State == fakecp.Stopped, nil }); err != nil {
		t.Fatal(err)
	}
	cancel()
	rep := <-done
	if len(rep.Cut) != 0 {
		t.Fatalf("a graceful shutdown cut streams: %+v", rep.Cut)
	}
	if rep.Clean["cp1"] < 4 {
		t.Fatalf("clean ends %v, want the 4 streams ended by cp1", rep.Clean)
	}
}

// A connection broken under a stream (a proxy closing it) is a cut: the
// watch's chunked body never ends, the Talos stream lacks its END line.
func TestStreamsCutWhenTheConnectionBreaks(t *testing.T) {
	s, dir := startCP(t, "127.0.0.72")
	o := streamsOptions(s, dir)
	// A relay in front of the fake that cuts every connection after 300 ms.
	relay := func(target netip.AddrPort) netip.AddrPort {
		ln := support.Listen(t, "127.0.0.72:0")
		support.Serve(ln, func(c net.Conn) {
			u, err := net.Dial("tcp", target.String())
			if err != nil {
				return
			}
			defer func() { _ = u.Close() }()
			go func() { _, _ = copyUntil(u, c) }()
			go func() { _, _ = copyUntil(c, u) }()
			time.Sleep(300 * time.Millisecond) // the cut under test, not synchronisation
		})
		return netip.MustParseAddrPort(ln.Addr().String())
	}
	o.API, o.Talos = relay(o.API), relay(o.Talos)
	o.Watches, o.TalosStreams = 1, 1
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	rep, err := RunStreams(ctx, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, c := range rep.Cut {
		kinds[c.Kind]++
	}
	if kinds["watch"] == 0 || kinds["talos"] == 0 {
		t.Fatalf("cut streams by kind %v (report %+v), want cuts of both kinds", kinds, rep)
	}
	if len(rep.Clean) != 0 {
		t.Fatalf("streams cut by the relay were counted as clean ends: %v", rep.Clean)
	}
}

// copyUntil copies src to dst until either fails.
func copyUntil(dst, src net.Conn) (int64, error) {
	buf := make([]byte, 4096)
	var n int64
	for {
		m, err := src.Read(buf)
		if m > 0 {
			if _, werr := dst.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if err != nil {
			return n, err
		}
	}
}
