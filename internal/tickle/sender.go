package tickle

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
)

// Writer sends one IP packet, header included, towards dst. Raw is the
// real one; tests record instead. A Writer is used by one goroutine at a
// time.
type Writer interface {
	WritePacket(pkt []byte, dst netip.Addr) error
}

// Default pacing and repeats, chosen in docs/tickle.md.
const (
	// DefaultRate sends 10 000 tickles in 200 ms: fast enough that the
	// last client of a large table hears within a fraction of a second,
	// slow enough (about 3 MB/s of 60-byte packets) not to overrun a
	// neighbour queue or a switch port.
	DefaultRate = 50_000
)

// DefaultRounds are the offsets from the start of a Send at which every
// tickle is sent: at once; 100 ms later, for a tickle lost on the way
// (most likely queued behind an unresolved neighbour); and 600 ms later,
// past the 500 ms for which a Linux client ignores further out-of-window
// ACKs on the connection, for a lost duplicate ACK or reset.
var DefaultRounds = []time.Duration{0, 100 * time.Millisecond, 600 * time.Millisecond}

// maxRounds bounds how often one connection is tickled.
const maxRounds = 5

// Options tune a Sender. The zero value means the defaults.
type Options struct {
	// Rate is how many packets per second the Sender writes, all rounds
	// together.
	Rate int
	// Rounds are the offsets from the start of a Send at which each
	// tickle is sent, ascending, the first normally 0. A round starts at
	// its offset or when the previous one has been written, whichever
	// is later.
	Rounds []time.Duration
	// Spread, when positive, paces each round so that it takes at least
	// this long: the rate drops to what spreads the targets over it
	// (never above Rate). It softens the storm of reconnections and
	// re-lists a mass reset causes, at the cost of telling the last
	// clients later; a round then starts when the previous one is
	// written, so each connection's repeat follows its first tickle by
	// about the spread.
	Spread time.Duration
}

// Sender writes tickles for many connections, paced and repeated.
type Sender struct {
	w      Writer
	rate   int
	rounds []time.Duration
	spread time.Duration
}

// NewSender returns a Sender writing to w; it rejects options that make
// no sense.
func NewSender(w Writer, opts Options) (*Sender, error) {
	s := &Sender{w: w, rate: opts.Rate, rounds: opts.Rounds, spread: opts.Spread}
	if s.spread < 0 {
		return nil, fmt.Errorf("tickle spread %s: must not be negative", s.spread)
	}
	if s.rate == 0 {
		s.rate = DefaultRate
	}
	if s.rate < 0 {
		return nil, fmt.Errorf("tickle rate %d: must be positive", s.rate)
	}
	if len(s.rounds) == 0 {
		s.rounds = DefaultRounds
	}
	if len(s.rounds) > maxRounds {
		return nil, fmt.Errorf("tickle rounds %v: at most %d", s.rounds, maxRounds)
	}
	for i, r := range s.rounds {
		if r < 0 || (i > 0 && r < s.rounds[i-1]) {
			return nil, fmt.Errorf("tickle rounds %v: offsets must be ascending and not negative", s.rounds)
		}
	}
	s.rounds = append([]time.Duration(nil), s.rounds...)
	return s, nil
}

// Result counts what a Send did.
type Result struct {
	// Targets is how many connections were asked for, Built how many of
	// them had a valid packet.
	Targets, Built int
	// Sent and Failed count packet writes over all rounds; Skipped the
	// repeats left out because the target had settled; Resets the
	// resets written to clients that answered with an ACK.
	Sent, Failed, Skipped, Resets int
	// FirstErr is the first build or write error, for the log.
	FirstErr error
}

// batchEvery is how often the pacing loop wakes: each wake writes the
// packets the rate allows since the start, so the rate holds on average
// without a timer per packet.
const batchEvery = time.Millisecond

// Send tickles every target in each round and returns when the last
// round is written or ctx ends (then with ctx's error). Targets whose
// packet cannot be built are counted and skipped. It stops early, with
// the error, when the socket refuses for lack of permission, since then
// every write would fail.
func (s *Sender) Send(ctx context.Context, targets []Target) (Result, error) {
	return s.SendSkipping(ctx, targets, nil)
}

// Answered is what the clients have answered so far; Capture is the real
// one. Both are called from the sending goroutine while answers arrive.
type Answered interface {
	// Settled tells whether t needs no further tickle; last is set for
	// the last round.
	Settled(t Target, last bool) bool
	// Acked returns the acknowledgement number of t's ACK answer.
	Acked(t Target) (seq uint32, ok bool)
}

// SendSkipping is Send guided by what the clients answered (ans; nil:
// nothing is known). Every round after the first leaves out the targets
// ans reports settled, and first writes a reset, once, to each target
// that answered with an ACK, with the acknowledgement number it carried
// (BuildReset: this host's kernel does not always send one). Pacing
// counts only the packets written, so a round of few is over quickly.
func (s *Sender) SendSkipping(ctx context.Context, targets []Target, ans Answered) (Result, error) {
	res := Result{Targets: len(targets)}
	pkts := make([]outPacket, 0, len(targets))
	for _, t := range targets {
		p, err := Build(t)
		if err != nil {
			if res.FirstErr == nil {
				res.FirstErr = err
			}
			continue
		}
		pkts = append(pkts, outPacket{t: t, pkt: p, dst: t.Client.Addr().Unmap()})
	}
	res.Built = len(pkts)
	if len(pkts) == 0 {
		return res, nil
	}
	gap := s.gap(len(pkts))
	start := time.Now()
	for r, offset := range s.rounds {
		if err := sleepUntil(ctx, start.Add(offset)); err != nil {
			return res, err
		}
		// Each round is paced from its own start: a round that begins
		// late must not burst to catch up with the previous one.
		rd := round{s: s, ctx: ctx, res: &res, start: time.Now(), gap: gap}
		for k := range pkts {
			if err := rd.target(&pkts[k], r, r == len(s.rounds)-1, ans); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// outPacket is one target's tickle.
type outPacket struct {
	t     Target
	pkt   []byte
	dst   netip.Addr
	reset bool // a reset was written
}

// round writes one round's packets, paced.
type round struct {
	s     *Sender
	ctx   context.Context
	res   *Result
	start time.Time
	gap   float64
	n     int // packets written this round
}

// target writes what p's target needs in round r: a reset once it has
// answered with an ACK, and the tickle unless it has settled (the first
// round tickles every target).
func (rd *round) target(p *outPacket, r int, last bool, ans Answered) error {
	if r > 0 && ans != nil {
		if seq, acked := ans.Acked(p.t); acked && !p.reset {
			p.reset = true
			if rst, err := BuildReset(p.t, seq); err == nil {
				ok, err := rd.write(rst, p.dst)
				if err != nil {
					return err
				}
				if ok {
					rd.res.Resets++
				}
			}
		}
		if ans.Settled(p.t, last) {
			rd.res.Skipped++
			return nil
		}
	}
	_, err := rd.write(p.pkt, p.dst)
	return err
}

// write sends one packet, never ahead of rate×elapsed (waking once per
// batch); false if the write failed, an error only if the send must stop.
func (rd *round) write(pkt []byte, dst netip.Addr) (bool, error) {
	due := rd.start.Add(time.Duration(float64(rd.n) * rd.gap))
	rd.n++
	if time.Until(due) > batchEvery {
		if err := sleepUntil(rd.ctx, due); err != nil {
			return false, err
		}
	}
	if err := rd.s.w.WritePacket(pkt, dst); err != nil {
		rd.res.Failed++
		if rd.res.FirstErr == nil {
			rd.res.FirstErr = fmt.Errorf("send tickle to %s: %w", dst, err)
		}
		if errors.Is(err, os.ErrPermission) {
			return false, rd.res.FirstErr
		}
		return false, nil
	}
	rd.res.Sent++
	return true, nil
}

// gap is the time between two packets of a round of n, in nanoseconds:
// the rate's, or longer to spread the round over the spread.
func (s *Sender) gap(n int) float64 {
	gap := float64(time.Second) / float64(s.rate)
	if s.spread > 0 && n > 1 {
		gap = max(gap, float64(s.spread)/float64(n-1))
	}
	return gap
}

// sleepUntil waits for t or the end of ctx.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
