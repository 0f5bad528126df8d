package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"halb/test/support"
)

// Server answers the load on one host: an echo port (every byte read is
// written back, for request/response and connection churn) and a sink
// port (read to EOF, then answer the byte count, for bulk streams).
type Server struct {
	echo, sink netip.AddrPort
	log        *slog.Logger
}

// NewServer returns a server for the two addresses; Run listens.
func NewServer(echo, sink netip.AddrPort, log *slog.Logger) *Server {
	return &Server{echo: echo, sink: sink, log: log.With("component", "loadgen")}
}

// Run listens and serves until ctx ends, then closes the listeners and
// every open connection and returns nil.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	echoLn, err := lc.Listen(ctx, "tcp", s.echo.String())
	if err != nil {
		return fmt.Errorf("listen on echo %s: %w", s.echo, err)
	}
	sinkLn, err := lc.Listen(ctx, "tcp", s.sink.String())
	if err != nil {
		_ = echoLn.Close()
		return fmt.Errorf("listen on sink %s: %w", s.sink, err)
	}
	s.log.Info("serving", "echo", echoLn.Addr().String(), "sink", sinkLn.Addr().String())
	Serve(ctx, echoLn, sinkLn)
	return nil
}

// Serve answers echo on echoLn and sink on sinkLn until ctx ends, then
// closes both listeners and every open connection.
func Serve(ctx context.Context, echoLn, sinkLn net.Listener) {
	var conns sync.Map // net.Conn -> struct{}, closed when ctx ends
	var wg sync.WaitGroup
	serve := func(ln net.Listener, handle func(net.Conn)) {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, struct{}{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conns.Delete(c)
				defer func() { _ = c.Close() }()
				handle(c)
			}()
		}
	}
	wg.Add(2)
	go serve(echoLn, support.Echo)
	go serve(sinkLn, sink)
	<-ctx.Done()
	_ = echoLn.Close()
	_ = sinkLn.Close()
	conns.Range(func(k, _ any) bool {
		_ = k.(net.Conn).Close()
		return true
	})
	wg.Wait()
}

// sink reads to EOF and answers the number of bytes it read (8 bytes, big
// endian), so the sender learns what really arrived.
func sink(c net.Conn) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return
		}
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	_, _ = c.Write(b[:])
}
