package stats

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net/netip"
	"sync"
	"time"
)

// A verified login is remembered this long, and at most this many are:
// only people who know a password can add one, and a dashboard or a
// Prometheus scrape sends the same credentials every few seconds.
const (
	verifiedFor = 5 * time.Minute
	maxVerified = 64
)

// busyRetry is the Retry-After of a login refused because every hashing
// slot was taken: slots free within one bcrypt comparison (~0.25 s).
const busyRetry = time.Second

// hashSlotsFor is how many bcrypt comparisons may run at once on procs
// cores: one per core but one, so the proxy always keeps a core to
// itself, and never more than two, because a comparison at cost 12
// holds a core for ~0.25 s and no honest client needs more.
func hashSlotsFor(procs int) int {
	return min(2, max(1, procs-1))
}

// outcome is what became of a login attempt.
type outcome int

const (
	loginOK      outcome = iota // the credentials are right
	loginWrong                  // checked and wrong; the attempt counted as a failure
	loginLimited                // the source has no attempt left; nothing was checked
	loginBusy                   // every hashing slot was taken; nothing was checked or counted
)

// verdict is the outcome of one attempt and what a client is told.
type verdict struct {
	outcome outcome
	wait    time.Duration // loginLimited, loginBusy: when to try again
	limited bool          // loginWrong: this failure used up the source's attempts
}

// logins decides basic-auth attempts so that guessing stays slow and
// bcrypt stays off the proxy's cores: per-source attempts are taken
// before hashing, hashing runs in a few slots that are never queued for,
// and a verified login is remembered so that an authenticated client
// pays bcrypt once, not on every request.
type logins struct {
	users []user
	decoy []byte
	// verify is the bcrypt check; tests wrap it to count and hold calls.
	verify func(name, password string) bool
	limit  *limiter
	slots  chan struct{} // one token per comparison running
	known  *verified
}

func newLogins(users []user, decoy []byte, now func() time.Time, slots int) *logins {
	return &logins{
		users:  users,
		decoy:  decoy,
		verify: func(name, password string) bool { return authenticate(users, decoy, name, password) },
		limit:  newLimiter(now),
		slots:  make(chan struct{}, slots),
		known:  newVerified(users, now),
	}
}

// check decides an attempt by client. The caller has already refused a
// source with no attempt left (limit.allow), so a locked-out source is
// refused even with remembered credentials.
func (l *logins) check(client netip.Addr, name, password string) verdict {
	key := l.known.key(name, password)
	if l.known.has(key) {
		return verdict{outcome: loginOK}
	}
	ok, wait, limited := l.limit.reserve(client)
	if !ok {
		return verdict{outcome: loginLimited, wait: wait}
	}
	select {
	case l.slots <- struct{}{}:
	default:
		// Waiting would let a flood pile up goroutines and sockets behind
		// the slots; the client may retry in a second.
		l.limit.refund(client)
		return verdict{outcome: loginBusy, wait: busyRetry}
	}
	good := l.hash(name, password)
	if !good {
		return verdict{outcome: loginWrong, limited: limited}
	}
	l.limit.refund(client)
	l.known.add(key)
	return verdict{outcome: loginOK}
}

// hash runs verify in the slot check took, and frees it.
func (l *logins) hash(name, password string) bool {
	defer func() { <-l.slots }()
	return l.verify(name, password)
}

// verified remembers logins bcrypt accepted, until they expire. It keeps
// a SHA-256 of the user table, the name and the password, never the
// password: the digest is salted with the table, so a changed hash, a
// new user file or a restart leaves every old entry unmatchable.
type verified struct {
	mu    sync.Mutex
	now   func() time.Time
	salt  [sha256.Size]byte
	until map[[sha256.Size]byte]time.Time
}

func newVerified(users []user, now func() time.Time) *verified {
	h := sha256.New()
	for _, u := range users {
		writeField(h, u.name)
		writeField(h, u.hash)
	}
	v := &verified{now: now, until: map[[sha256.Size]byte]time.Time{}}
	h.Sum(v.salt[:0])
	return v
}

// writeField writes b with its length, so that no two different field
// lists hash the same bytes.
func writeField(h io.Writer, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	_, _ = h.Write(n[:]) // a hash.Hash never fails to write
	_, _ = h.Write(b)
}

func (v *verified) key(name, password string) [sha256.Size]byte {
	h := sha256.New()
	writeField(h, v.salt[:])
	writeField(h, []byte(name))
	writeField(h, []byte(password))
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func (v *verified) has(k [sha256.Size]byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	until, ok := v.until[k]
	if !ok {
		return false
	}
	if !v.now().Before(until) {
		delete(v.until, k)
		return false
	}
	return true
}

// add remembers k; when full it drops expired entries, then the one
// closest to expiring.
func (v *verified) add(k [sha256.Size]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if _, ok := v.until[k]; !ok && len(v.until) >= maxVerified {
		var first [sha256.Size]byte
		var firstUntil time.Time
		for e, until := range v.until {
			if !now.Before(until) {
				delete(v.until, e)
				continue
			}
			if firstUntil.IsZero() || until.Before(firstUntil) {
				first, firstUntil = e, until
			}
		}
		if len(v.until) >= maxVerified {
			delete(v.until, first)
		}
	}
	v.until[k] = now.Add(verifiedFor)
}
