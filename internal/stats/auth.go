package stats

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"halb/internal/config"
	"halb/internal/smallfile"
)

// user is one login: a name and its bcrypt hash.
type user struct {
	name []byte
	hash []byte
}

// entry is one user definition and where it was made.
type entry struct {
	loc, name, hash string
}

// maxPasswordFile bounds the stats password file: a million bytes hold
// thousands of bcrypt lines.
const maxPasswordFile = 1 << 20

// loadUsers merges cfg.Users with the lines of cfg.PasswordFile. Errors
// name the config path or the file and line, never a hash: a hash can be
// attacked offline, and a "hash" that fails to parse may be a password.
func loadUsers(cfg config.Stats) ([]user, error) {
	var entries []entry
	for i, u := range cfg.Users {
		entries = append(entries, entry{loc: fmt.Sprintf("stats.users[%d]", i), name: u.Name, hash: u.PasswordHash})
	}
	var errs []error
	if cfg.PasswordFile != "" {
		// Bounded and regular files only: /dev/zero or a FIFO named here
		// must not exhaust memory or hang the start.
		data, err := smallfile.Read(cfg.PasswordFile, maxPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read stats password file: %w", err)
		}
		more, err := parsePasswordFile(bytes.NewReader(data), cfg.PasswordFile)
		if err != nil {
			errs = append(errs, err)
		}
		entries = append(entries, more...)
	}
	var users []user
	where := map[string]string{} // name -> where it was defined
	for _, e := range entries {
		if prev, ok := where[e.name]; ok {
			errs = append(errs, fmt.Errorf("%s: user %q is already defined at %s", e.loc, e.name, prev))
			continue
		}
		if _, err := bcrypt.Cost([]byte(e.hash)); err != nil {
			errs = append(errs, fmt.Errorf("%s: user %q: not a valid bcrypt hash (make one with `halb passwd`)", e.loc, e.name))
			continue
		}
		where[e.name] = e.loc
		users = append(users, user{name: []byte(e.name), hash: []byte(e.hash)})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(users) == 0 {
		return nil, errors.New("stats: no users: add stats.users or lines to stats.password_file (make a hash with `halb passwd`)")
	}
	return users, nil
}

// parsePasswordFile reads "name:bcrypt-hash" lines from r, which is the
// file called name; blank lines and lines starting with # are skipped.
func parsePasswordFile(r io.Reader, name string) ([]entry, error) {
	var entries []entry
	var errs []error
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		loc := fmt.Sprintf("%s line %d", name, n)
		user, hash, ok := strings.Cut(line, ":")
		user, hash = strings.TrimSpace(user), strings.TrimSpace(hash)
		switch {
		case !ok:
			// Not echoing the line: it may be a bare hash or password.
			errs = append(errs, fmt.Errorf("%s: want name:bcrypt-hash", loc))
		case user == "":
			errs = append(errs, fmt.Errorf("%s: empty user name", loc))
		default:
			entries = append(entries, entry{loc: loc, name: user, hash: hash})
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read stats password file %s: %w", name, err))
	}
	return entries, errors.Join(errs...)
}

// authenticate reports whether name and password match a user. It takes
// the same time whether or not the user exists: names are compared in
// constant time against every user, and a bcrypt comparison always runs.
func authenticate(users []user, decoy []byte, name, password string) bool {
	hash := decoy
	found := 0
	for _, u := range users {
		match := subtle.ConstantTimeCompare(u.name, []byte(name))
		if match == 1 {
			hash = u.hash
		}
		found |= match
	}
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	return ok && found == 1
}

// decoyHash picks the hash that unknown user names are checked against:
// a real user's with the highest cost, so the comparison takes as long as
// for a real user. Its outcome is ignored.
func decoyHash(users []user) []byte {
	var best []byte
	bestCost := -1
	for _, u := range users {
		if c, err := bcrypt.Cost(u.hash); err == nil && c > bestCost {
			best, bestCost = u.hash, c
		}
	}
	return best
}

// Failed-login limits: a source may fail failBurst times at once, then
// once per failEvery; at most maxSources sources are remembered.
const (
	failBurst  = 5
	failEvery  = time.Second
	maxSources = 4096
)

// limiter is a token bucket of login attempts per source. An attempt
// takes a token before its password is checked and gives it back if the
// password was right, so only failures use the bucket up; a source with no
// token left is refused before its credentials are checked, so guessing
// is slow and costs the server no bcrypt work.
type limiter struct {
	mu      sync.Mutex
	now     func() time.Time
	buckets map[netip.Prefix]bucket
}

// bucket holds the tokens a source had right after its last attempt.
type bucket struct {
	tokens float64
	at     time.Time
}

// tokensAt is how many tokens b has refilled to by now.
func (b bucket) tokensAt(now time.Time) float64 {
	return min(failBurst, b.tokens+max(0, now.Sub(b.at).Seconds())/failEvery.Seconds())
}

func newLimiter(now func() time.Time) *limiter {
	return &limiter{now: now, buckets: map[netip.Prefix]bucket{}}
}

// sourceKey groups an IPv6 client by its /64, which one host usually
// controls whole; an IPv4 client is its own key.
func sourceKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits) // cannot fail: bits fits the family
	return p
}

// allow reports whether a may try to log in now, and if not, how long
// until it may. It takes nothing: reserve does.
func (l *limiter) allow(a netip.Addr) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[sourceKey(a)]
	if !ok {
		return true, 0
	}
	return b.wait(l.now())
}

// wait is allow for one bucket.
func (b bucket) wait(now time.Time) (bool, time.Duration) {
	t := b.tokensAt(now)
	if t >= 1 {
		return true, 0
	}
	return false, max(time.Duration((1-t)*float64(failEvery)), time.Millisecond)
}

// reserve takes a token for an attempt from a before its password is
// checked: counting only after the (slow) check let concurrent guesses
// all pass a limit that none of them had yet used up. It reports whether
// a had a token, if not how long until it will, and whether a is out of
// tokens now (for logging the moment a source gets limited).
func (l *limiter) reserve(a netip.Addr) (ok bool, wait time.Duration, limited bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	key := sourceKey(a)
	b, found := l.buckets[key]
	if !found {
		l.makeRoom(now)
		b = bucket{tokens: failBurst, at: now}
	}
	if ok, wait := b.wait(now); !ok {
		return false, wait, true
	}
	b = bucket{tokens: b.tokensAt(now) - 1, at: now}
	l.buckets[key] = b
	return true, 0, b.tokens < 1
}

// refund gives back the token of an attempt that did not fail: a right
// password, or one never checked because the server was busy.
func (l *limiter) refund(a netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := sourceKey(a)
	b, ok := l.buckets[key]
	if !ok {
		return // forgotten meanwhile: a missing bucket is a full one
	}
	now := l.now()
	t := min(failBurst, b.tokensAt(now)+1)
	if t >= failBurst {
		delete(l.buckets, key) // a full bucket carries no state
		return
	}
	l.buckets[key] = bucket{tokens: t, at: now}
}

// makeRoom keeps the map under maxSources: it forgets sources whose bucket
// has refilled (they carry no state), then, if still full, the source
// that failed longest ago. It holds l.mu.
func (l *limiter) makeRoom(now time.Time) {
	if len(l.buckets) < maxSources {
		return
	}
	var oldest netip.Prefix
	var oldestAt time.Time
	for k, b := range l.buckets {
		if b.tokensAt(now) >= failBurst {
			delete(l.buckets, k)
			continue
		}
		if oldestAt.IsZero() || b.at.Before(oldestAt) {
			oldest, oldestAt = k, b.at
		}
	}
	if len(l.buckets) >= maxSources {
		delete(l.buckets, oldest)
	}
}

// size is how many sources are remembered, for tests.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
