package cluster

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A packet to a host whose process is gone (nothing bound on the port)
// draws a "port unreachable" from that host's kernel; the gossip socket's
// reader hands the packet's destination on. The loopback's kernel plays
// the peer's host.
func TestGossipSocketsReportPortUnreachable(t *testing.T) {
	for _, tt := range []struct{ name, network, bind, peer string }{
		{"IPv4", "udp4", "127.0.0.63:0", "127.0.0.64"},
		{"IPv6", "udp6", "[::1]:0", "::1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			found := make(chan netip.AddrPort, 4)
			s, err := listenGossip(netip.MustParseAddrPort(tt.bind), newRefusalLog(io.Discard, slog.New(slog.DiscardHandler), time.Now),
				func(a netip.AddrPort) { found <- a }, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer takeGossip(s)()
			at := &net.UDPAddr{IP: net.ParseIP(tt.peer)}

			// A port that was just free: the dead peer's.
			dead, err := net.ListenUDP(tt.network, at)
			if err != nil {
				t.Fatal(err)
			}
			peer := dead.LocalAddr().(*net.UDPAddr).AddrPort()
			_ = dead.Close()
			if _, err := s.WriteTo([]byte{0xff, 'h', 'b', 1}, peer.String()); err != nil {
				t.Fatalf("send to the dead peer: %v", err)
			}
			select {
			case got := <-found:
				if got != peer {
					t.Fatalf("port unreachable reported for %s, want %s", got, peer)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no port unreachable reported for %s within 5s", peer)
			}

			// A live peer draws nothing: its packets are read.
			live, err := net.ListenUDP(tt.network, at)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = live.Close() }()
			if _, err := s.WriteTo([]byte("x"), live.LocalAddr().String()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 8)
			_ = live.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := live.Read(buf); err != nil {
				t.Fatalf("the live peer got nothing: %v", err)
			}
			select {
			case got := <-found:
				t.Fatalf("port unreachable reported for %s, which is alive", got)
			default:
			}
		})
	}
}

func TestPortUnreachableReadsTheExtendedError(t *testing.T) {
	cmsg := func(level, typ int32, errno unix.Errno, origin uint8) []byte {
		data := make([]byte, sockExtendedErrLen)
		data[0], data[1], data[2], data[3] = byte(errno), byte(errno>>8), byte(errno>>16), byte(errno>>24)
		data[4] = origin
		b := make([]byte, unix.CmsgSpace(len(data)))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(len(data)))
		copy(b[unix.CmsgLen(0):], data)
		return b
	}
	for _, tt := range []struct {
		name string
		oob  []byte
		want bool
	}{
		{"ICMP port unreachable", cmsg(unix.IPPROTO_IP, unix.IP_RECVERR, unix.ECONNREFUSED, unix.SO_EE_ORIGIN_ICMP), true},
		{"ICMPv6 port unreachable", cmsg(unix.IPPROTO_IPV6, unix.IPV6_RECVERR, unix.ECONNREFUSED, unix.SO_EE_ORIGIN_ICMP6), true},
		{"host unreachable", cmsg(unix.IPPROTO_IP, unix.IP_RECVERR, unix.EHOSTUNREACH, unix.SO_EE_ORIGIN_ICMP), false},
		{"local error", cmsg(unix.IPPROTO_IP, unix.IP_RECVERR, unix.ECONNREFUSED, unix.SO_EE_ORIGIN_LOCAL), false},
		{"another message", cmsg(unix.IPPROTO_IP, unix.IP_TTL, unix.ECONNREFUSED, unix.SO_EE_ORIGIN_ICMP), false},
		{"nothing", nil, false},
	} {
		if got := portUnreachable(tt.oob); got != tt.want {
			t.Errorf("%s: portUnreachable = %v, want %v", tt.name, got, tt.want)
		}
	}
}
