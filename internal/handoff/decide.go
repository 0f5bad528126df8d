package handoff

import (
	"time"
)

// Fresh is how old a peer's offer may be for the new holder to trust it:
// offers come every 200 ms, so this is several lost ones in a row.
const Fresh = time.Second

// Grace is added to timeouts.drain for the new holder's own deadline: the
// old holder closes what is left at the end of its drain, and the clients'
// last packets (their FIN's ACK) still need the forwarding.
const Grace = 2 * time.Second

// Peer is what a node knows of one peer's hand-off offer for a VIP.
type Peer struct {
	Name  string
	Alive bool  // alive in the membership as seen here
	Offer Offer // its latest offer for the VIP; zero if none
	Heard time.Time
}

// PickPeer names the peer whose connections a node claiming the VIP
// forwards: an alive peer whose fresh offer says it holds the VIP (or is
// still handing it off after an earlier move), the most recent first. A
// peer that died or never offered has its connections tickled instead
// (docs/tickle.md); ok is false then.
func PickPeer(peers []Peer, now time.Time) (Peer, bool) {
	var best Peer
	found := false
	for _, p := range peers {
		if !p.Alive || now.Sub(p.Heard) > Fresh || len(p.Offer.MAC) != 6 {
			continue
		}
		if p.Offer.State != Holding && p.Offer.State != Handing {
			continue
		}
		if !found || rank(p) > rank(best) || (rank(p) == rank(best) && p.Heard.After(best.Heard)) {
			best, found = p, true
		}
	}
	return best, found
}

// rank prefers a peer that holds the VIP over one still handing it off.
func rank(p Peer) int {
	if p.Offer.State == Holding {
		return 1
	}
	return 0
}

// Stop says why the new holder stops forwarding, or that it goes on.
type Stop int

const (
	// Forward: go on.
	Forward Stop = iota
	// StopDone: the old holder's connections are all closed.
	StopDone
	// StopDead: the old holder died; its connections are tickled.
	StopDead
	// StopAborted: the old holder could not keep the address; its
	// connections are tickled.
	StopAborted
	// StopDeadline: the old holder's drain, and the grace, are over.
	StopDeadline
	// StopLost: this node no longer holds the VIP.
	StopLost
)

func (s Stop) String() string {
	switch s {
	case Forward:
		return "forwarding"
	case StopDone:
		return "the old holder's connections are closed"
	case StopDead:
		return "the old holder died"
	case StopAborted:
		return "the old holder could not keep the address"
	case StopDeadline:
		return "drain deadline passed"
	case StopLost:
		return "this node no longer holds the VIP"
	}
	return "unknown"
}

// Tickle reports whether the connections still forwarded are tickled
// when forwarding stops for s: only when nobody is left to close them.
func (s Stop) Tickle() bool { return s == StopDead || s == StopAborted }

// Forwarding is the new holder's side of one hand-off.
type Forwarding struct {
	Peer     string
	Since    time.Time // when forwarding was installed
	Deadline time.Time // Since + drain + Grace
	// Cap bounds how long past Deadline forwarding goes on while the old
	// holder still says, freshly, that it serves handed-off connections:
	// its drain starts at its release, which a busy cluster can delay by
	// seconds after this node's claim (Since + 2×drain + Grace; zero: no
	// extension).
	Cap time.Time
	// Lost is when this node was first seen not holding (nor claiming)
	// the VIP since; zero while it holds it.
	Lost time.Time
}

// NextForward decides whether the new holder goes on forwarding to the
// old holder, given what it knows of that peer now and whether it still
// holds (or is claiming) the VIP. Once it lost the VIP it forwards for
// Grace more: clients whose ARP entries are younger than their locktime
// still send here for a moment after the next holder's claim, and their
// packets of the old holder's connections must still reach it. An offer
// heard before Since belongs to the time before the move and says nothing
// about its end.
func NextForward(f Forwarding, peer Peer, held bool, now time.Time) Stop {
	switch {
	case !held && !f.Lost.IsZero() && now.Sub(f.Lost) >= Grace:
		return StopLost
	case !peer.Alive:
		return StopDead
	}
	if !peer.Heard.Before(f.Since) {
		switch peer.Offer.State {
		case Aborted:
			return StopAborted
		case Done:
			return StopDone
		}
	}
	if !now.Before(f.Deadline) && !stillHanding(f, peer, now) {
		return StopDeadline
	}
	return Forward
}

// stillHanding reports whether the old holder said within Grace, since
// the move, that it still serves handed-off connections, and Cap has not
// passed: its own drain, counted from its release, then ends them with a
// FIN that the clients answer through this node's forwarding.
func stillHanding(f Forwarding, peer Peer, now time.Time) bool {
	return peer.Offer.State == Handing && !peer.Heard.Before(f.Since) &&
		now.Sub(peer.Heard) < Grace && now.Before(f.Cap)
}

// Quiet is the old holder's side of one hand-off: it keeps the address,
// answers no ARP for it, and serves its connections until Deadline.
type Quiet struct {
	Since    time.Time
	Deadline time.Time // Since + timeouts.drain, or the stop's end
}

// QuietStep is what the old holder does next.
type QuietStep int

const (
	// KeepQuiet: connections are still open and there is time.
	KeepQuiet QuietStep = iota
	// EndQuiet: nothing is left to serve (or the VIP came back here):
	// drop the ARP rule; the address goes unless held again.
	EndQuiet
	// CloseRest: the drain is over; close what is left cleanly (FIN)
	// while the clients can still be reached, then end.
	CloseRest
)

func (s QuietStep) String() string {
	switch s {
	case KeepQuiet:
		return "keep"
	case EndQuiet:
		return "end"
	case CloseRest:
		return "close the rest"
	}
	return "unknown"
}

// MinQuiet is the least time the old holder keeps the address after the
// move even with no connection left: a handshake in flight at the move
// (its SYN answered here, its ACK forwarded) is not a session yet, and
// ending at once would reset it.
const MinQuiet = time.Second

// NextQuiet decides the old holder's next step from how many client
// connections it still has through the VIP and whether it holds the VIP
// again (a hand-back: its connections are its own again). Only the old
// holder decides that its connections are over: the new holder stops
// forwarding when it says Done.
func NextQuiet(q Quiet, open int, heldAgain bool, now time.Time) QuietStep {
	switch {
	case heldAgain || (open == 0 && now.Sub(q.Since) >= MinQuiet):
		return EndQuiet
	case !now.Before(q.Deadline):
		return CloseRest
	}
	return KeepQuiet
}
