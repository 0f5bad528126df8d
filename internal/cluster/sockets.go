package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"halb/internal/exitorder"
)

// Sizes of the UDP side, as memberlist's own transport uses them.
const (
	udpPacketBuf = 65536
	udpRecvBuf   = 2 * 1024 * 1024
)

// bindTries bounds the search for a port free for both TCP and UDP when
// the kernel picks it (port 0, tests).
const bindTries = 10

// gossipSockets is memberlist's UDP + TCP transport with one thing
// memberlist's NetTransport lacks: its sockets can be closed and opened
// again on the same address while memberlist runs. A hard drill closes
// them so the gossip port refuses connections (the peers' kernels get a
// RST, their heartbeat probes read "refused") exactly as when the process
// is killed, and opens them again as a restarted process would.
type gossipSockets struct {
	log      *slog.Logger
	refusals *refusalLog // reports packets dropped as junk
	// unreachable is told where a packet drew a "port unreachable"
	// (unreachable.go); nil: nobody listens.
	unreachable func(netip.AddrPort)
	packetCh    chan *memberlist.Packet
	streamCh    chan net.Conn
	quit        chan struct{} // closed by Shutdown: readers stop forwarding

	mu   sync.Mutex
	addr netip.AddrPort // fixed once the first open picked the port
	tcp  *net.TCPListener
	udp  *net.UDPConn
	// pins hold the two sockets at the top of the descriptor table, so
	// that a killed process's kernel closes them before its proxied
	// connections: peers read "refused" and "port unreachable" from the
	// first moment of the teardown, not its end (internal/exitorder).
	pins []*exitorder.Pin
	shut bool
	wg   sync.WaitGroup
}

// listenGossip opens the gossip sockets on bind (port 0: the kernel picks
// one free for both protocols).
func listenGossip(bind netip.AddrPort, refusals *refusalLog, unreachable func(netip.AddrPort), log *slog.Logger) (*gossipSockets, error) {
	s := &gossipSockets{
		log:         log,
		refusals:    refusals,
		unreachable: unreachable,
		packetCh:    make(chan *memberlist.Packet),
		streamCh:    make(chan net.Conn),
		quit:        make(chan struct{}),
		addr:        bind,
	}
	var err error
	for range bindTries {
		if err = s.open(); err == nil || bind.Port() != 0 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// open binds both sockets on s.addr and starts their readers. With port 0
// the TCP socket picks the port and the UDP one follows it.
func (s *gossipSockets) open() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return net.ErrClosed
	}
	if s.tcp != nil {
		return nil // already open
	}
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(s.addr))
	if err != nil {
		return fmt.Errorf("listen for gossip streams on %s: %w", s.addr, err)
	}
	port := tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(s.addr.Addr(), uint16(port))))
	if err != nil {
		_ = tcp.Close() // nothing accepted yet
		return fmt.Errorf("listen for gossip packets on %s port %d: %w", s.addr.Addr(), port, err)
	}
	recvErrors(udp)
	for size := udpRecvBuf; size > 0; size /= 2 {
		// Large bursts of gossip must not be dropped by a small default
		// buffer; the kernel may cap what it grants.
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	s.addr = netip.AddrPortFrom(s.addr.Addr(), uint16(port))
	s.tcp, s.udp = tcp, udp
	s.pins = s.pins[:0]
	for _, sock := range []syscall.Conn{tcp, udp} {
		p, err := exitorder.New(sock, exitorder.Listeners)
		if err != nil {
			s.log.Debug("gossip socket released in its turn at exit", "err", err)
			continue
		}
		s.pins = append(s.pins, p)
	}
	s.wg.Add(2)
	go s.acceptStreams(tcp)
	go s.readPackets(udp)
	return nil
}

// closeSockets closes both sockets, as a process's exit would, and waits
// for their readers; open binds them again.
func (s *gossipSockets) closeSockets() {
	s.closeNow()
	s.wg.Wait()
}

// closeNow closes both sockets without waiting for their readers, which
// may be handing a last packet on: the port refuses from this moment, as
// when a process dies.
func (s *gossipSockets) closeNow() {
	s.mu.Lock()
	tcp, udp, pins := s.tcp, s.udp, s.pins
	s.tcp, s.udp, s.pins = nil, nil, nil
	s.mu.Unlock()
	for _, p := range pins {
		_ = p.Close()
	}
	if tcp != nil {
		_ = tcp.Close()
		_ = udp.Close()
	}
}

func (s *gossipSockets) acceptStreams(ln *net.TCPListener) {
	defer s.wg.Done()
	for {
		c, err := ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// A transient failure (out of descriptors): back off a little
			// rather than spin.
			s.log.Debug("accept gossip stream", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		select {
		case s.streamCh <- c:
		case <-s.quit:
			_ = c.Close()
			return
		}
	}
}

func (s *gossipSockets) readPackets(conn *net.UDPConn) {
	defer s.wg.Done()
	for {
		buf := make([]byte, udpPacketBuf)
		n, from, err := conn.ReadFrom(buf)
		at := time.Now() // as close to the read as possible: memberlist measures RTTs with it
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// With IP_RECVERR a read fails once for an ICMP error
			// queued meanwhile; the queue says which peer it was.
			if s.unreachable != nil {
				drainUnreachable(conn, s.unreachable)
			}
			continue // a bad datagram says nothing about the next one
		}
		if n < 1 {
			s.refusals.refuse(from.String(), "UDP packet too short (0 bytes)")
			continue
		}
		select {
		case s.packetCh <- &memberlist.Packet{Buf: buf[:n], From: from, Timestamp: at}:
		case <-s.quit:
			return
		}
	}
}

// Port is the bound port.
func (s *gossipSockets) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.addr.Port())
}

// FinalAdvertiseAddr implements memberlist.Transport; halb always sets the
// advertised address.
func (s *gossipSockets) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, 0, fmt.Errorf("advertise address %q: %w", ip, err)
	}
	return net.IP(a.Unmap().AsSlice()), port, nil
}

// WriteTo implements memberlist.Transport. While the sockets are closed
// the packet is lost, as a UDP packet may be.
func (s *gossipSockets) WriteTo(b []byte, addr string) (time.Time, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, fmt.Errorf("resolve %s: %w", addr, err)
	}
	s.mu.Lock()
	udp := s.udp
	s.mu.Unlock()
	if udp == nil {
		return time.Now(), nil
	}
	_, err = udp.WriteTo(b, ua)
	return time.Now(), err
}

// PacketCh implements memberlist.Transport.
func (s *gossipSockets) PacketCh() <-chan *memberlist.Packet { return s.packetCh }

// DialTimeout implements memberlist.Transport.
func (s *gossipSockets) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

// StreamCh implements memberlist.Transport.
func (s *gossipSockets) StreamCh() <-chan net.Conn { return s.streamCh }

// Shutdown closes the sockets for good; it is safe to call more than once.
func (s *gossipSockets) Shutdown() error {
	s.mu.Lock()
	if !s.shut {
		s.shut = true
		close(s.quit)
	}
	s.mu.Unlock()
	s.closeSockets()
	return nil
}
