package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"halb/test/netnsrun"
	"halb/test/support"
)

// IdlePort is the port of the lab's idle frontend (Options.IdleFrontend):
// plain TCP through the VIP to a server in each control plane's namespace
// that echoes what it reads, so a connection that sends nothing is never
// written to (HoldIdle), and one that sends a line gets it back
// (HoldEcho, the hold/echo client of issue 17). Thousands of connections can be held
// there without TLS or the fake control planes' idle timeout (30 s)
// closing them, so what is measured is halb's cost of holding them.
const IdlePort = 7000

// idleClients is the client addresses' prefix, outside the lab's /24 so
// that there is room for thousands; the LB nodes route it via the client.
var idleClients = netip.MustParsePrefix("10.66.0.0/16")

// idleConfig is the frontend and backend Config adds with
// Options.IdleFrontend: no timeouts the connections could hit, and a
// maxconn above the default 10 000.
func (l *Lab) idleConfig(w func(format string, args ...any)) {
	w("  - name: idle\n    balance: roundrobin\n    health:\n      type: tcp")
	w("      interval: 500ms\n      timeout: 300ms\n      fall: 2\n      rise: 2")
	w("    servers:")
	for i, cp := range l.CPNames() {
		w("      - name: %s\n        address: %s:%d", cp, CPAddr(i+1), IdlePort)
	}
}

// idleServers accepts connections on IdlePort in every control plane's
// namespace, inside the lab's own process, and echoes what they send.
type idleServers struct {
	lns      []net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    map[net.Conn]struct{} // open ones
	wg       sync.WaitGroup        // accept loops
	echoes   sync.WaitGroup        // one per connection
}

// startIdleServers listens in every control plane's namespace; it is
// called by Up before halb starts, so the idle backend is healthy at once.
func (l *Lab) startIdleServers() error {
	s := &idleServers{conns: map[net.Conn]struct{}{}}
	l.mu.Lock()
	l.idle = s
	l.mu.Unlock()
	for i, cp := range l.CPNames() {
		var ln net.Listener
		err := l.inNS(cp, func() error {
			var err error
			ln, err = net.Listen("tcp", netip.AddrPortFrom(CPAddr(i+1), IdlePort).String())
			return err
		})
		if err != nil {
			return fmt.Errorf("idle server in %s: %w", cp, err)
		}
		s.lns = append(s.lns, ln)
		s.wg.Go(func() { s.accept(ln) })
	}
	return nil
}

// accept serves ln until it is closed. Any other error (out of file
// descriptors, an aborted handshake) passes: the server must outlive it,
// or every later repetition through it would fail.
func (s *idleServers) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.echoes.Go(func() {
			// Echo until the peer closes, then close too, as any server
			// would: a connection left half-open would hold the proxy's
			// session and a descriptor on both sides.
			support.Echo(c)
			_ = c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		})
	}
}

func (s *idleServers) close() {
	for _, ln := range s.lns {
		_ = ln.Close()
	}
	s.wg.Wait()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.echoes.Wait()
}

// inNS runs f on a new goroutine's OS thread switched into host's
// namespace and back; sockets f makes stay there. A thread that cannot
// switch back stays locked and the runtime ends it with its goroutine, so
// nothing else runs in the wrong place.
// (A thread ended that way must never have started a lab process: their
// parent-death signal follows the thread, not the process.)
func (l *Lab) inNS(host string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		_, err := netnsrun.Do(l.NS(host), func() (struct{}, error) { return struct{}{}, f() })
		errc <- err
	}()
	return <-errc
}

// IdleConns is a set of idle plain TCP connections from the client
// through the VIP to IdlePort.
type IdleConns struct {
	mu    sync.Mutex
	conns []net.Conn
}

// Len is how many connections are held.
func (h *IdleConns) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Close closes every held connection.
func (h *IdleConns) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.conns = nil
}

// idleDialers is how many threads in the client's namespace dial at once.
const idleDialers = 16

// HoldIdle opens n connections from the client to the VIP's IdlePort,
// perClient from each client address (addresses in 10.66.0.0/16 added to
// the client, with a route to them on every LB node), keep-alive off,
// and leaves them idle: a control plane's clients are many hosts with a
// few connections each, which is what the shared table's encoding is
// sized by. It needs Options.IdleFrontend and an open-file limit above
// n (RaiseFileLimit). Bounded by ctx and 10 s per dial.
func (l *Lab) HoldIdle(ctx context.Context, n, perClient int) (*IdleConns, error) {
	if perClient <= 0 {
		perClient = 1
	}
	srcs, err := l.addIdleClients(ctx, (n+perClient-1)/perClient)
	if err != nil {
		return nil, err
	}
	h := &IdleConns{conns: make([]net.Conn, 0, n)}
	target := netip.AddrPortFrom(VIP(), IdlePort)
	var next atomic.Int64
	errc := make(chan error, idleDialers)
	for range idleDialers {
		go func() {
			errc <- l.inNS("cl", func() error {
				for {
					i := int(next.Add(1)) - 1
					if i >= n || ctx.Err() != nil {
						return ctx.Err()
					}
					c, err := dialIdle(ctx, srcs[i/perClient], target)
					if err != nil {
						return fmt.Errorf("connection %d of %d: %w", i+1, n, err)
					}
					h.mu.Lock()
					h.conns = append(h.conns, c)
					h.mu.Unlock()
				}
			})
		}()
	}
	var errs []error
	for range idleDialers {
		errs = append(errs, <-errc)
	}
	if err := errors.Join(errs...); err != nil {
		h.Close()
		return nil, fmt.Errorf("hold %d idle connections: %w", n, err)
	}
	return h, nil
}

func dialIdle(ctx context.Context, src netip.Addr, target netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{
		Timeout:   10 * time.Second,
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
		// No keep-alive: the connections stay silent, as the idle
		// clients of a control plane are between requests.
		KeepAliveConfig: net.KeepAliveConfig{Enable: false},
		KeepAlive:       -1,
	}
	return d.DialContext(ctx, "tcp", target.String())
}

// addIdleClients adds count addresses of 10.66.0.0/16 to the client (once
// per lab: later calls reuse them) and routes the prefix via the client
// on every LB node.
func (l *Lab) addIdleClients(ctx context.Context, count int) ([]netip.Addr, error) {
	if count > 65000 {
		return nil, fmt.Errorf("%d idle client addresses: at most 65000", count)
	}
	out := make([]netip.Addr, count)
	a := idleClients.Addr().Next()
	for i := range out {
		out[i] = a
		a = a.Next()
	}
	l.mu.Lock()
	have := l.idleAddrs
	l.mu.Unlock()
	if have < count {
		var b strings.Builder
		for _, a := range out[have:] {
			fmt.Fprintf(&b, "address add %s/32 dev eth0\n", a)
		}
		batch := filepath.Join(l.dir, "idle-clients.batch")
		if err := os.WriteFile(batch, []byte(b.String()), 0o644); err != nil {
			return nil, fmt.Errorf("write client address batch: %w", err)
		}
		if _, err := l.ip(ctx, "cl", "-batch", batch); err != nil {
			return nil, fmt.Errorf("add idle client addresses: %w", err)
		}
		if have == 0 {
			for _, lb := range l.LBNames() {
				if _, err := l.ip(ctx, lb, "route", "replace", idleClients.String(), "via", clientIP.String()); err != nil {
					return nil, fmt.Errorf("route idle clients on %s: %w", lb, err)
				}
			}
		}
		l.mu.Lock()
		l.idleAddrs = count
		l.mu.Unlock()
	}
	return out, nil
}

// IdleAccepted is how many connections the idle servers have accepted.
func (l *Lab) IdleAccepted() int {
	l.mu.Lock()
	s := l.idle
	l.mu.Unlock()
	if s == nil {
		return 0
	}
	return int(s.accepted.Load())
}

// RaiseFileLimit lifts this process's open-file limit towards n and
// returns the limit now in effect; the lab's processes inherit it.
// Holding connections needs two descriptors per connection here (client
// and idle server) and two in halb. Raising the hard limit needs
// CAP_SYS_RESOURCE; without it the soft limit goes up to the hard one,
// which the caller sees in the result.
func RaiseFileLimit(n uint64) (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	if lim.Cur >= n {
		return lim.Cur, nil
	}
	want := unix.Rlimit{Cur: n, Max: max(lim.Max, n)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err == nil {
		return n, nil
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise the open-file limit to %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}
