package fakecp

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// serveTalos answers like apid after its handshake: a client that offered
// no ALPN (the lab's TLS probe) reads the server's name and the server
// closes; one that negotiated h2, as gRPC clients do, gets a stream of
// ticks until it goes or the server stops.
func (s *Server) serveTalos(g *generation, c *trackedConn) {
	defer s.wg.Done()
	tc, ok := s.handshake(c, s.talosConf, talosListener)
	if !ok {
		return
	}
	s.note(talosListener, evAuthenticated, c.RemoteAddr())
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		_ = tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = tc.Write([]byte(s.opts.Name + "\n"))
		_ = tc.Close() // sends close_notify
		return
	}
	s.mu.Lock()
	if s.gen != g {
		s.mu.Unlock()
		_ = tc.Close()
		return
	}
	g.streams.Add(1)
	s.mu.Unlock()
	defer g.streams.Done()
	gone := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(gone)
		_, _ = io.Copy(io.Discard, tc) // ends when the client closes or tc does
	}()
	s.tick(tc, gone, g.quit)
	_ = tc.Close() // close_notify before the stream counts as ended
	<-gone
}

// tick writes "NAME tick N" every tick until gone or quit is closed or a
// write fails; on quit it ends with "END NAME".
func (s *Server) tick(w net.Conn, gone, quit <-chan struct{}) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for n := 0; ; n++ {
		_ = w.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(w, "%s tick %d\n", s.opts.Name, n); err != nil {
			return
		}
		select {
		case <-gone:
			return
		case <-quit:
			// The server's own end of the stream, as a gRPC stream ends
			// with its status trailers: a client can tell it from a
			// connection cut under it, which TLS alone cannot show.
			_, _ = fmt.Fprintf(w, "END %s\n", s.opts.Name)
			return
		case <-t.C:
		}
	}
}

// remoteAddr is the client's address of an HTTP request.
func remoteAddr(r *http.Request) net.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}
