package cluster

import (
	"bytes"
	"io"
	"log"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"time"
)

// How much is said about gossip refused from a sender. memberlist logs
// every undecryptable, unreadable or over-limit message it drops, at ERROR,
// naming the sender: a peer with a stale key retries every second, and
// anyone who can reach the gossip port can send junk as fast as the
// network carries it, from as many (spoofed UDP) source addresses as they
// like. So one sender is named once per refusalEvery, and at most
// refusalBurst senders in all per refusalEvery; the rest is counted, and
// the count travels with the next line logged.
const (
	refusalEvery   = time.Minute
	refusalBurst   = 10
	refusalSenders = 1024 // senders remembered; more clear the table
)

// What a line about a sender says it is.
const (
	keyRefusalMsg = "refused gossip from a node with another gossip key (wrong, old or removed key, or none): compare `halb keys list` on both nodes"
	junkMsg       = "dropped gossip from a sender: not a message from a node of this cluster, or over a limit"
	failedMsg     = "gossip with a sender failed"
)

var (
	// keyRefusal matches memberlist's lines about gossip this node could
	// not decrypt or that came unencrypted.
	keyRefusal = regexp.MustCompile(`(?i)(no installed keys could decrypt|decrypt packet failed|remote state is not encrypted|encryption version)`)
	// fromAddr matches the sender memberlist names in a line.
	fromAddr = regexp.MustCompile(`from=(\S+)`)
	// junk matches memberlist's lines about a message it could not read
	// or that broke a limit, as opposed to an exchange that failed later.
	junk = regexp.MustCompile(`(?i)(label|decode|not supported|message type|msgtype|too short|decompress|failed to receive|read remote state|exceeds limit|larger than limit|truncated|gossip stream)`)
	// loudTag matches the levels memberlist drops a sender's message at.
	loudTag = regexp.MustCompile(`^\[(WARN|WARNING|ERR|ERROR)\]`)
)

// refusalLog stands between memberlist's loggers and the log bridge. A line
// about a message refused from a sender (a WARN or ERR naming from=, or a
// key mismatch at any level) becomes one line that names the sender and
// says what it likely is, within the budget above; everything else passes
// on unchanged.
type refusalLog struct {
	next io.Writer
	log  *slog.Logger
	now  func() time.Time

	mu         sync.Mutex
	last       map[netip.Addr]time.Time // when each sender was last named
	window     time.Time                // start of the current refusalEvery
	loud       int                      // senders named in the window
	suppressed int                      // refusals not logged since the last one logged
	seen       int64                    // refusals handled in all, logged or not
}

func newRefusalLog(next io.Writer, l *slog.Logger, now func() time.Time) *refusalLog {
	return &refusalLog{next: next, log: l, now: now, last: map[netip.Addr]time.Time{}}
}

// logger returns a standard logger writing through r, for memberlist and
// its transport.
func (r *refusalLog) logger() *log.Logger { return log.New(r, "", 0) }

func (r *refusalLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\r\n"))
	m := fromAddr.FindStringSubmatch(line)
	// Only what arrived from someone: this node's own failed joins are
	// logged by joinLoop, naming the peer, and Debug lines stay as they are.
	key := m != nil && keyRefusal.MatchString(line)
	if m == nil || !key && !loudTag.MatchString(line) {
		return r.next.Write(p)
	}
	reason := strings.TrimSpace(fromAddr.ReplaceAllString(line, ""))
	if i := strings.Index(reason, "memberlist: "); i >= 0 {
		reason = reason[i+len("memberlist: "):]
	}
	msg := failedMsg
	switch {
	case key:
		msg = keyRefusalMsg
	case junk.MatchString(reason):
		msg = junkMsg
	}
	r.report(m[1], msg, reason)
	return len(p), nil
}

// refuse reports a stream or packet this node dropped itself.
func (r *refusalLog) refuse(from, reason string) { r.report(from, junkMsg, reason) }

func (r *refusalLog) report(from, msg, reason string) {
	peer := from
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(from); err == nil {
		addr = ap.Addr().Unmap()
		peer = addr.String()
	}
	loud, suppressed := r.allow(addr)
	if !loud {
		return
	}
	args := []any{"peer", peer, "err", reason}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	r.log.Warn(msg, args...)
}

// allow says whether a refusal from sender is logged now and, if so, how
// many were not since the last one that was.
func (r *refusalLog) allow(sender netip.Addr) (loud bool, suppressed int) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen++
	if now.Sub(r.window) >= refusalEvery {
		r.window, r.loud = now, 0
	}
	if last, ok := r.last[sender]; (ok && now.Sub(last) < refusalEvery) || r.loud >= refusalBurst {
		r.suppressed++
		return false, 0
	}
	if len(r.last) >= refusalSenders {
		clear(r.last) // bounds the memory a flood of source addresses takes
	}
	r.last[sender] = now
	r.loud++
	suppressed, r.suppressed = r.suppressed, 0
	return true, suppressed
}

// handled returns how many refusals were reported, logged or not.
func (r *refusalLog) handled() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}
