package tickle

import (
	"fmt"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Target is one client connection to reset: the VIP side (address and
// frontend port) and the client side, as the client's kernel knows it.
type Target struct {
	VIP    netip.AddrPort
	Client netip.AddrPort
}

func (t Target) String() string { return t.Client.String() + "->" + t.VIP.String() }

// tickleWindow is the window the tickle advertises. Its value is
// irrelevant to the client (the segment is out of window and dropped
// after the reply); a non-zero one keeps middleboxes from treating the
// segment as a zero-window probe.
const tickleWindow = 1234

// hopLimit is the TTL or hop limit of a tickle: the usual default, so a
// client behind routers receives it like any other segment of the
// connection.
const hopLimit = 64

// Build returns the IP packet (IPv4 or IPv6 header and TCP header, no
// payload) of the tickle ACK for t: from t.VIP to t.Client, flag ACK only,
// sequence and acknowledgement numbers 0.
//
// Why 0: the client checks an arriving segment's sequence number against
// its receive window, and a window is at most 1 GiB of the 4 GiB sequence
// space, placed at a random offset by the initial sequence number, so 0
// is outside it all but by a chance the size of the window over 2^32. An
// out-of-window ACK makes the client send a duplicate ACK with its real
// numbers (RFC 793 §3.9, RFC 5961 §4), which the new holder's kernel
// answers with an acceptable reset. The client rate-limits those
// duplicate ACKs per connection (Linux: net.ipv4.tcp_invalid_ratelimit,
// 500 ms), which is why the Sender spaces its later repeat beyond that.
func Build(t Target) ([]byte, error) {
	return build(t, &layers.TCP{Seq: 0, Ack: 0, ACK: true, Window: tickleWindow})
}

// BuildReset returns the IP packet of a reset from t.VIP to t.Client with
// sequence number seq: the acknowledgement number of the client's answer
// to a tickle, which is where its receive window starts, so the client
// accepts the reset (RFC 5961 §3.2) and drops the connection. It backs up
// the reset this host's kernel sends for the answer, which never comes
// when the kernel holds a socket of its own for the 4-tuple: a TIME_WAIT
// left from an earlier tenure, whose port the client has reused through
// the previous holder, answers with an ACK instead.
func BuildReset(t Target, seq uint32) ([]byte, error) {
	return build(t, &layers.TCP{Seq: seq, RST: true})
}

// build fills in the ports and serializes tcp behind the right IP header.
func build(t Target, tcp *layers.TCP) ([]byte, error) {
	vip, client := t.VIP.Addr().Unmap(), t.Client.Addr().Unmap()
	if !vip.IsValid() || !client.IsValid() {
		return nil, fmt.Errorf("build tickle %s: an address is missing", t)
	}
	if vip.Is4() != client.Is4() {
		return nil, fmt.Errorf("build tickle %s: VIP and client are of different families", t)
	}
	if t.VIP.Port() == 0 || t.Client.Port() == 0 {
		return nil, fmt.Errorf("build tickle %s: port 0", t)
	}
	tcp.SrcPort, tcp.DstPort = layers.TCPPort(t.VIP.Port()), layers.TCPPort(t.Client.Port())
	var ip gopacket.SerializableLayer
	if vip.Is4() {
		ip4 := &layers.IPv4{
			Version:  4,
			IHL:      5,
			Flags:    layers.IPv4DontFragment,
			TTL:      hopLimit,
			Protocol: layers.IPProtocolTCP,
			SrcIP:    vip.AsSlice(),
			DstIP:    client.AsSlice(),
		}
		if err := tcp.SetNetworkLayerForChecksum(ip4); err != nil {
			return nil, fmt.Errorf("build tickle %s: %w", t, err)
		}
		ip = ip4
	} else {
		ip6 := &layers.IPv6{
			Version:    6,
			NextHeader: layers.IPProtocolTCP,
			HopLimit:   hopLimit,
			SrcIP:      vip.AsSlice(),
			DstIP:      client.AsSlice(),
		}
		if err := tcp.SetNetworkLayerForChecksum(ip6); err != nil {
			return nil, fmt.Errorf("build tickle %s: %w", t, err)
		}
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, tcp); err != nil {
		return nil, fmt.Errorf("build tickle %s: %w", t, err)
	}
	return buf.Bytes(), nil
}
