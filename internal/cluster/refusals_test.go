package cluster

import (
	"bytes"
	"fmt"
	"log"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"halb/test/support"
)

// The budget the docs promise (docs/security.md): one line per sender a
// minute, ten senders a minute in all.
const documentedRefusalBurst = 10

// TestRefusalLogBoundsAFlood feeds the logger what memberlist logs for 1000
// junk packets from one sender and 1000 from as many (spoofed) senders: a
// handful of lines come out, and the next one after the minute says how
// many were not logged.
func TestRefusalLogBoundsAFlood(t *testing.T) {
	rec := support.NewLog()
	now := time.Unix(1000, 0)
	var passed bytes.Buffer
	r := newRefusalLog(&passed, rec.Logger(), func() time.Time { return now })
	ml := log.New(r, "", 0)
	for i := range 1000 {
		ml.Printf(`[ERR] memberlist: discarding packet with unacceptable label "": from=192.0.2.1:%d`, 1000+i)
	}
	for i := range 1000 {
		ml.Printf("[ERR] memberlist: Decrypt packet failed: No installed keys could decrypt the message from=10.%d.%d.1:7946", i/256, i%256)
	}
	if got := len(rec.Records()); got > documentedRefusalBurst {
		t.Fatalf("2000 junk packets logged %d lines, want at most %d", got, documentedRefusalBurst)
	}
	if got := rec.Count(slog.LevelWarn, "dropped gossip from a sender", "peer=192.0.2.1", "unacceptable label"); got != 1 {
		t.Fatalf("%d lines for the one-address flood, want 1", got)
	}
	if passed.Len() != 0 {
		t.Fatalf("junk passed on unchanged: %q", passed.String())
	}
	now = now.Add(refusalEvery)
	ml.Printf(`[ERR] memberlist: discarding packet with unacceptable label "x": from=192.0.2.1:1`)
	if got := rec.Count(slog.LevelWarn, "dropped gossip", "peer=192.0.2.1"); got != 2 {
		t.Fatalf("%d lines for the one-address flood after a minute, want 2", got)
	}
	// Every refusal is logged or counted on a later line, exactly once.
	lines, counted := 0, int64(0)
	for _, r := range rec.Records() {
		lines++
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "suppressed" {
				counted += a.Value.Int64()
			}
			return true
		})
	}
	if got := int64(lines-1) + counted; got != 2000 {
		t.Fatalf("%d lines before the last one + %d counted as suppressed = %d, want the 2000 refusals", lines-1, counted, got)
	}
	if got := r.handled(); got != 2001 {
		t.Fatalf("%d refusals handled, want 2001", got)
	}
}

// TestRefusalLogWordsWhatFailed: junk and failed exchanges are told apart,
// and a sender's lines below WARN pass on unchanged.
func TestRefusalLogWordsWhatFailed(t *testing.T) {
	rec := support.NewLog()
	var passed bytes.Buffer
	r := newRefusalLog(&passed, rec.Logger(), time.Now)
	ml := log.New(r, "", 0)
	ml.Printf("[ERR] memberlist: failed to receive: %v from=192.0.2.1:1", errStreamTooLong)
	ml.Printf("[ERR] memberlist: Failed to send ack: write: broken pipe from=192.0.2.2:1")
	ml.Printf("[DEBUG] memberlist: Stream connection from=192.0.2.3:1")
	if got := rec.Count(slog.LevelWarn, "dropped gossip from a sender", "peer=192.0.2.1", "gossip stream longer than"); got != 1 {
		t.Errorf("an oversized stream: %d lines naming it junk, want 1", got)
	}
	if got := rec.Count(slog.LevelWarn, "gossip with a sender failed", "peer=192.0.2.2", "broken pipe"); got != 1 {
		t.Errorf("a failed ack: %d lines, want 1", got)
	}
	if !bytes.Contains(passed.Bytes(), []byte("Stream connection")) {
		t.Errorf("the Debug line did not pass on: %q", passed.String())
	}
}

// TestJunkGossipIsLoggedBounded sends 1000 junk UDP packets (unlabelled,
// labelled but undecryptable, empty) and a few junk TCP streams to a real
// node: they are all handled, and logged in a bounded number of lines.
func TestJunkGossipIsLoggedBounded(t *testing.T) {
	addr := freePort(t, "127.0.0.85")
	cfg := nodeConfig("lb1", addr)
	cfg.JoinTimeout = 0
	n := start(t, cfg)
	waitReady(t, n, 5*time.Second)

	pc, err := net.ListenPacket("udp", "127.0.0.86:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	to := net.UDPAddrFromAddrPort(addr)
	labelled, err := memberlist.AddLabelHeaderToPacket([]byte("not encrypted with any key of ours"), gossipLabel)
	if err != nil {
		t.Fatal(err)
	}
	junk := [][]byte{[]byte("\x00garbage without a label"), labelled, {}}
	const packets, batch = 1000, 100
	for sent := 0; sent < packets; {
		for range batch {
			if _, err := pc.WriteTo(junk[sent%len(junk)], to); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		// In batches, so the node's socket buffer never drops one.
		want := int64(sent)
		waitFor(t, n.c, 5*time.Second, fmt.Sprintf("%d junk packets handled", want), func() bool { return n.c.refusals.handled() >= want })
	}
	const streams = 5
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.86")}, Timeout: 2 * time.Second}
	for range streams {
		c, err := d.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		_ = c.Close()
	}
	waitFor(t, n.c, 5*time.Second, "junk streams handled", func() bool { return n.c.refusals.handled() >= packets+streams })

	if got := n.rec.Count(slog.LevelInfo); got > documentedRefusalBurst+5 {
		t.Errorf("%d junk packets and %d streams logged %d lines at Info or above, want a handful", packets, streams, got)
	}
	if got := n.rec.Count(slog.LevelDebug, "gossip", "peer=127.0.0.86"); got != 1 {
		t.Errorf("the junk sender was named %d times, want once", got)
	}
	if got := n.rec.Count(slog.LevelError); got != 0 {
		t.Errorf("junk logged %d errors, want none: it is the sender's fault", got)
	}
}
