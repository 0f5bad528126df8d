package tickle

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func TestBuildGolden(t *testing.T) {
	tests := []struct {
		name   string
		target Target
		want   string // hex, spaces between headers and fields for reading
	}{
		{
			name: "ipv4",
			target: Target{
				VIP:    netip.MustParseAddrPort("192.0.2.10:6443"),
				Client: netip.MustParseAddrPort("198.51.100.7:40000"),
			},
			want: "4500 0028 0000 4000 40 06 4e8b c000020a c6336407" +
				" 192b 9c40 00000000 00000000 50 10 04d2 0952 0000",
		},
		{
			name: "ipv6",
			target: Target{
				VIP:    netip.MustParseAddrPort("[2001:db8::10]:6443"),
				Client: netip.MustParseAddrPort("[2001:db8:1::7]:40000"),
			},
			want: "60000000 0014 06 40 20010db8000000000000000000000010 20010db8000100000000000000000007" +
				" 192b 9c40 00000000 00000000 50 10 04d2 9a0d 0000",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Build(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ReplaceAll(tt.want, " ", ""); hex.EncodeToString(got) != want {
				t.Errorf("packet\n got %x\nwant %s", got, want)
			}
		})
	}
}

// sum16 is the Internet checksum's ones'-complement sum (RFC 1071),
// written here independently of gopacket to check its checksums.
func sum16(chunks ...[]byte) uint16 {
	var s uint32
	for _, b := range chunks {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// TestBuildDecodes checks what the client's kernel checks: both
// checksums are right, and the segment is a bare ACK from the VIP port to
// the client port with numbers 0, or for BuildReset a bare reset with the
// sequence number given.
func TestBuildDecodes(t *testing.T) {
	for _, reset := range []bool{false, true} {
		testBuildDecodes(t, reset)
	}
}

func testBuildDecodes(t *testing.T, reset bool) {
	for _, target := range []Target{
		{VIP: netip.MustParseAddrPort("10.0.0.1:443"), Client: netip.MustParseAddrPort("10.0.0.2:55555")},
		{VIP: netip.MustParseAddrPort("[fd00::1]:6443"), Client: netip.MustParseAddrPort("[fd00::abcd]:33333")},
		// A 4-in-6 mapped VIP is sent as IPv4.
		{VIP: netip.MustParseAddrPort("[::ffff:10.0.0.1]:50000"), Client: netip.MustParseAddrPort("10.9.8.7:1")},
	} {
		t.Run(fmt.Sprintf("%s reset=%v", target, reset), func(t *testing.T) {
			const seq = 0xdeadbeef
			pkt, err := Build(target)
			if reset {
				pkt, err = BuildReset(target, seq)
			}
			if err != nil {
				t.Fatal(err)
			}
			vip, client := target.VIP.Addr().Unmap(), target.Client.Addr().Unmap()
			first := layers.LayerTypeIPv6
			if vip.Is4() {
				first = layers.LayerTypeIPv4
			}
			p := gopacket.NewPacket(pkt, first, gopacket.Default)
			if el := p.ErrorLayer(); el != nil {
				t.Fatalf("decode: %v", el.Error())
			}
			tcp, ok := p.TransportLayer().(*layers.TCP)
			if !ok {
				t.Fatalf("no TCP layer in %v", p)
			}
			var pseudo []byte
			switch ip := p.NetworkLayer().(type) {
			case *layers.IPv4:
				if got := sum16(pkt[:20]); got != 0xffff {
					t.Errorf("IPv4 header checksum does not verify: sum %#x", got)
				}
				if netip.AddrFrom4([4]byte(ip.SrcIP.To4())) != vip || netip.AddrFrom4([4]byte(ip.DstIP.To4())) != client {
					t.Errorf("addresses %v -> %v, want %v -> %v", ip.SrcIP, ip.DstIP, vip, client)
				}
				pseudo = append(append(append([]byte{}, ip.SrcIP.To4()...), ip.DstIP.To4()...), 0, 6, 0, byte(len(pkt)-20))
			case *layers.IPv6:
				if netip.AddrFrom16([16]byte(ip.SrcIP)) != vip || netip.AddrFrom16([16]byte(ip.DstIP)) != client {
					t.Errorf("addresses %v -> %v, want %v -> %v", ip.SrcIP, ip.DstIP, vip, client)
				}
				pseudo = append(append(append([]byte{}, ip.SrcIP...), ip.DstIP...), 0, 0, 0, byte(len(pkt)-40), 0, 0, 0, 6)
			default:
				t.Fatalf("network layer %T", ip)
			}
			if got := sum16(pseudo, tcp.Contents); got != 0xffff {
				t.Errorf("TCP checksum does not verify: sum %#x", got)
			}
			switch {
			case reset && (!tcp.RST || tcp.ACK || tcp.SYN || tcp.FIN || tcp.Seq != seq || tcp.Ack != 0 || len(tcp.Payload) != 0):
				t.Errorf("segment %+v, want a bare reset with seq %#x", tcp, seq)
			case !reset && (!tcp.ACK || tcp.SYN || tcp.RST || tcp.FIN || tcp.PSH || tcp.Seq != 0 || tcp.Ack != 0 || len(tcp.Payload) != 0):
				t.Errorf("segment %+v, want a bare ACK with numbers 0", tcp)
			}
			if uint16(tcp.SrcPort) != target.VIP.Port() || uint16(tcp.DstPort) != target.Client.Port() {
				t.Errorf("ports %d -> %d, want %d -> %d", tcp.SrcPort, tcp.DstPort, target.VIP.Port(), target.Client.Port())
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	for name, target := range map[string]Target{
		"mixed families": {VIP: netip.MustParseAddrPort("10.0.0.1:443"), Client: netip.MustParseAddrPort("[fd00::2]:1")},
		"no client":      {VIP: netip.MustParseAddrPort("10.0.0.1:443")},
		"port 0":         {VIP: netip.MustParseAddrPort("10.0.0.1:443"), Client: netip.MustParseAddrPort("10.0.0.2:0")},
	} {
		if _, err := Build(target); err == nil {
			t.Errorf("%s: Build(%v) succeeded", name, target)
		}
	}
}
