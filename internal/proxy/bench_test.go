package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"halb/internal/config"
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
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_, _ = io.Copy(io.Discard, c)
				_, _ = c.Write([]byte{1})
			}()
		}
	}()
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

func benchFrontend(b *testing.B, target string) (string, func()) {
	b.Helper()
	ap := netipAddrPortB(b, target)
	p := newPool(config.RoundRobin, config.Server{Name: "sink", Address: ap, Weight: 1})
	f := NewFrontend(config.Frontend{Name: "fe", Bind: netipAddrPortB(b, "127.0.0.1:0")}, p,
		Options{Timeouts: testTimeouts()}, discardLog())
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
