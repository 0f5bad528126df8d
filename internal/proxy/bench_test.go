package proxy

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"halb/internal/config"
	"halb/test/loadgen"
	"halb/test/support"
)

// sinkServer accepts connections, reads them to EOF and answers with one
// byte, so a writer knows its bytes arrived.
func sinkServer(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.21:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	support.Serve(ln, func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c)
		_, _ = c.Write([]byte{1})
	})
	return ln.Addr().String()
}

// pushThrough sends n bytes to addr, half-closes and waits for the ack.
func pushThrough(b *testing.B, addr string, n int, buf []byte) time.Duration {
	b.Helper()
	start := time.Now()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	for left := n; left > 0; left -= len(buf) {
		if _, err := c.Write(buf[:min(left, len(buf))]); err != nil {
			b.Fatal(err)
		}
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkProxyThroughput moves 1 MiB per op through the proxy and
// reports how long the same transfer takes direct (x_direct = proxied/direct).
func BenchmarkProxyThroughput(b *testing.B) {
	target := sinkServer(b)
	addr, stop := benchFrontend(b, target)
	defer stop()
	buf := make([]byte, 256<<10)
	total := b.N << 20
	b.SetBytes(1 << 20)
	b.ResetTimer()
	proxied := pushThrough(b, addr, total, buf)
	b.StopTimer()
	direct := pushThrough(b, target, total, buf)
	b.ReportMetric(float64(proxied)/float64(direct), "x_direct")
}

// BenchmarkProxyConnect opens and closes one connection per op through
// the proxy, and reports the ratio to direct connects.
func BenchmarkProxyConnect(b *testing.B) {
	target := sinkServer(b)
	addr, stop := benchFrontend(b, target)
	defer stop()
	buf := make([]byte, 1)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		pushThrough(b, addr, 1, buf)
	}
	proxied := time.Since(start)
	b.StopTimer()
	start = time.Now()
	for range b.N {
		pushThrough(b, target, 1, buf)
	}
	b.ReportMetric(float64(proxied)/float64(time.Since(start)), "x_direct")
}

func benchFrontend(b *testing.B, target string, coldAfter ...time.Duration) (string, func()) {
	b.Helper()
	ap := netipAddrPortB(b, target)
	p := newPool(config.RoundRobin, config.Server{Name: "sink", Address: ap, Weight: 1})
	f := NewFrontend(config.Frontend{Name: "fe", Bind: netipAddrPortB(b, "127.0.0.1:0")}, p,
		Options{Timeouts: testTimeouts(), coldAfter: append(coldAfter, 0)[0]}, discardLog())
	ctx, cancel := contextWithCancel()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	select {
	case <-f.Ready():
	case err := <-done:
		cancel()
		b.Fatal(err)
	}
	return f.Addr().String(), func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}

// echoTarget is an echo server for the request/response benchmarks.
func echoTarget(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.22:0")
	if err != nil {
		b.Fatal(err)
	}
	sink, err := net.Listen("tcp4", "127.0.0.22:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := contextWithCancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		loadgen.Serve(ctx, ln, sink)
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}

// BenchmarkProxyRR sends 64-byte requests over one connection through the
// proxy and waits for each echo.
func BenchmarkProxyRR(b *testing.B) {
	addr, stop := benchFrontend(b, echoTarget(b))
	defer stop()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	msg := make([]byte, loadgen.MsgSize)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProxyChurn opens a connection per op through the proxy, sends
// 64 bytes, reads the echo and closes.
func BenchmarkProxyChurn(b *testing.B) {
	addr, stop := benchFrontend(b, echoTarget(b))
	defer stop()
	msg := make([]byte, loadgen.MsgSize)
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
}

// BenchmarkProxyIdle holds b.N idle proxied connections (each after one
// exchange) and reports the Go memory each costs the proxy: heap and
// goroutine stacks, measured in this process, which also holds the
// client's and the server's ends — those are subtracted by measuring
// the same connections direct.
func BenchmarkProxyIdle(b *testing.B) {
	target := echoTarget(b)
	addr, stop := benchFrontend(b, target, 50*time.Millisecond)
	defer stop()
	n := max(b.N, 200)
	dh, ds := idleCost(b, target, n)
	ph, ps := idleCost(b, addr, n)
	b.ReportMetric((ph-dh)/float64(n), "heap-B/idle-conn")
	b.ReportMetric((ps-ds)/float64(n), "stack-B/idle-conn")
}

// idleCost opens n idle connections to addr and returns the growth of
// heap in use and of stacks in use.
func idleCost(b *testing.B, addr string, n int) (heap, stack float64) {
	b.Helper()
	inUse := func() (float64, float64) {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapInuse), float64(m.StackInuse)
	}
	h0, s0 := inUse()
	h, err := loadgen.OpenIdle(context.Background(), []string{addr}, n, 8)
	if err != nil {
		b.Fatal(err)
	}
	if h.Opened() != n {
		b.Fatalf("opened %d of %d", h.Opened(), n)
	}
	// The proxy's sessions park 50 ms after the exchange; give them
	// the moment to get there.
	time.Sleep(300 * time.Millisecond)
	h1, s1 := inUse()
	h.Close()
	return h1 - h0, s1 - s0
}
