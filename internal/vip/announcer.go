package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"halb/internal/config"
)

// Status is a snapshot of an Announcer for the admin API and metrics.
type Status struct {
	VIP         netip.Prefix
	Interface   string
	Owner       bool      // the election wants this node to hold the VIP
	Held        bool      // the address is on the interface by our hand
	Since       time.Time // when Held last changed; zero if it never did
	LastGARP    time.Time // zero if none was sent
	GARPsSent   uint64    // successful announcements (each a request and a reply for IPv4)
	Transitions uint64    // times Held changed
	// Quiet: released, but the address is kept without announcing it
	// while this node serves its connections handed off (HandOff).
	Quiet     bool
	LastError string // latest error, "" if none since the last success
}

// Timing defaults. Refreshes come four times per lifetime so that one or
// two lost refreshes never let the address expire under a live holder.
const (
	minBackoff     = 100 * time.Millisecond
	maxBackoff     = 5 * time.Second
	foreverRecheck = 5 * time.Second // presence check when the lifetime is infinite
	periodic       = "periodic refresh"
)

// Announcer holds or releases one VIP on one interface as told by
// SetOwner. Run does all of its I/O on Run's own goroutine, so a caller
// that pins that goroutine to a network namespace gets the whole
// Announcer there.
type Announcer struct {
	vip    netip.Prefix
	cfg    config.VIP
	ifname string
	label  string
	link   Link
	garp   GARPSender
	log    *slog.Logger

	backoffMin, backoffMax time.Duration
	refreshEvery           time.Duration

	kick    chan struct{} // cap 1: something for Run to look at
	changed chan struct{} // cap 1: Held changed

	mu         sync.Mutex
	want       bool
	wantReason string
	wantGen    uint64    // bumped on each change of want
	reannounce string    // pending Reannounce reason; "" if none
	foreignAt  time.Time // last announcement of the VIP by another host while held
	foreignMAC string
	dead       bool            // playing dead for a hard drill; see PlayDead
	waiters    []chan struct{} // closed after the next full step; see barrier
	keepQuiet  bool            // HandOff: a release keeps the address, quiet
	st         Status
}

// NewAnnouncer returns an Announcer for cfg.Address on ifname (which
// overrides cfg.Interface, as a cluster node may). It does no I/O.
func NewAnnouncer(cfg config.VIP, ifname string, link Link, garp GARPSender, log *slog.Logger) *Announcer {
	if ifname == "" {
		ifname = cfg.Interface
	}
	vip := cfg.Address
	refresh := cfg.Lifetime / 4
	if refresh <= 0 {
		refresh = foreverRecheck
	}
	return &Announcer{
		vip:          vip,
		cfg:          cfg,
		ifname:       ifname,
		label:        Label(ifname),
		link:         link,
		garp:         garp,
		log:          log.With("component", "vip", "vip", vip.String(), "iface", ifname),
		backoffMin:   minBackoff,
		backoffMax:   maxBackoff,
		refreshEvery: refresh,
		kick:         make(chan struct{}, 1),
		changed:      make(chan struct{}, 1),
		st:           Status{VIP: vip, Interface: ifname},
	}
}

// SetOwner says whether this node should hold the VIP. It does not block;
// Run acts on the latest call.
func (a *Announcer) SetOwner(own bool, reason string) {
	a.mu.Lock()
	if a.want != own {
		a.want, a.wantReason = own, reason
		a.wantGen++
		a.st.Owner = own
	}
	a.mu.Unlock()
	a.poke()
}

// Reannounce asks for a burst of gratuitous ARPs if the VIP is held, e.g.
// after membership changed or a partition healed. It does not block and
// does nothing while the VIP is not held.
func (a *Announcer) Reannounce(reason string) {
	a.mu.Lock()
	a.reannounce = reason
	a.mu.Unlock()
	a.poke()
}

// PlayDead makes the Announcer act as a killed process leaves its VIP
// (dead) or as a restarted process finds it (!dead), for a hard drill.
// While dead it touches nothing: a held address stays on the interface,
// unrefreshed and unannounced, other hosts' announcements go unanswered,
// and SetOwner is only remembered; Held reads false, as a process that
// died holds nothing. Coming back it checks the interface as at start:
// the address left there is adopted and announced if this node owns the
// VIP by then, removed otherwise. It does not block.
func (a *Announcer) PlayDead(dead bool) {
	a.mu.Lock()
	a.dead = dead
	a.mu.Unlock()
	a.poke()
}

// Foreign tells the Announcer that another host (hardware address mac)
// announced the VIP. While this node holds it, that announcement may have
// pointed the neighbours' caches away, as when a peer that wrongly thought
// this node dead claimed the VIP for a moment and let it go again; once the
// other host has been quiet for a burst's length, the VIP is announced
// again. A real handover releases the VIP before then, and a peer that
// really holds it too does the same on hearing us, so the last holder
// always has the last word. It does not block.
func (a *Announcer) Foreign(mac net.HardwareAddr) {
	a.mu.Lock()
	if a.st.Held {
		a.foreignAt, a.foreignMAC = time.Now(), mac.String()
	}
	a.mu.Unlock()
	a.poke()
}

// foreignQuiet is how long another host's announcements must have stopped
// before the holder answers them: about one burst of theirs.
func (a *Announcer) foreignQuiet() time.Duration {
	return time.Duration(a.cfg.GARPCount+1) * a.cfg.GARPInterval
}

// answerGap is the least time between two answers to other hosts'
// announcements: the periodic refresh, or 10 s without one.
func (a *Announcer) answerGap() time.Duration {
	if a.cfg.GARPRefresh > 0 {
		return a.cfg.GARPRefresh
	}
	return 10 * time.Second
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// HandOff says whether a release keeps the address on the interface,
// quietly: no gratuitous ARP, and Held false, so the election sees it
// released, while the sockets of the connections handed off keep working
// (docs/handoff.md). While it is set no announcement is sent, even before
// the release: the new holder's claim must have the last word. The caller keeps the kernel from answering ARP for
// it. HandOff(false) removes a quietly kept address at the next step. It
// does not block.
func (a *Announcer) HandOff(keep bool) {
	a.mu.Lock()
	a.keepQuiet = keep
	a.mu.Unlock()
	a.poke()
}

// Held reports whether the address is on the interface by our hand now.
func (a *Announcer) Held() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Held
}

// Changed receives a value after Held changes; changes that nobody read
// yet are coalesced into one.
func (a *Announcer) Changed() <-chan struct{} { return a.changed }

// Status returns a snapshot of the Announcer.
func (a *Announcer) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

func (a *Announcer) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// loop is the state only Run's goroutine touches.
type loop struct {
	checked     bool      // the start-up check for stale addresses is done
	gen         uint64    // wantGen last acted on
	retryAt     time.Time // no add, delete or check before this, after a failure
	backoff     time.Duration
	burstLeft   int
	burstWhy    string
	nextGARP    time.Time
	nextRefresh time.Time
	nextPeriod  time.Time // next periodic GARP (cfg.GARPRefresh)
	foreign     bool      // warned about a VIP someone else configured
	answeredAt  time.Time // last answer to another host's announcement
	dead        bool      // PlayDead acted on
}

// errFatal marks errors that retrying cannot fix.
type errFatal struct{ error }

func (e errFatal) Unwrap() error { return e.error }

// Run manages the address until ctx is cancelled, then withdraws it if
// held and returns nil. It returns an error only when it cannot work at
// all, such as missing CAP_NET_ADMIN; it withdraws the address then too.
func (a *Announcer) Run(ctx context.Context) error {
	l := &loop{backoff: a.backoffMin}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			a.withdraw("shutting down")
			return nil
		default:
		}
		a.mu.Lock()
		waiters := a.waiters
		a.waiters = nil
		a.mu.Unlock()
		next, err := a.step(l, time.Now())
		for _, w := range waiters {
			close(w)
		}
		if err != nil {
			a.log.Error("vip announcer stopped", "err", err)
			a.withdraw("stopping on error")
			return err
		}
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			a.withdraw("shutting down")
			return nil
		case <-a.kick:
		case <-timer.C:
		}
	}
}

// wish is what a step reads of the state that other goroutines change.
type wish struct {
	want       bool
	reason     string
	gen        uint64
	reann      string // pending Reannounce reason; "" if none
	held       bool
	foreignAt  time.Time
	foreignMAC string
	dead       bool
}

// takeWish reads the shared state for one step and consumes the pending
// Reannounce. An announcement by another host is forgotten while the VIP
// is not held: it cannot have misled anyone about us.
func (a *Announcer) takeWish() wish {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := wish{
		want: a.want, reason: a.wantReason, gen: a.wantGen,
		reann: a.reannounce, held: a.st.Held,
		foreignAt: a.foreignAt, foreignMAC: a.foreignMAC,
		dead: a.dead,
	}
	a.reannounce = ""
	if !w.held {
		a.foreignAt = time.Time{}
	}
	return w
}

// step does whatever is due at now and returns when it next has work.
func (a *Announcer) step(l *loop, now time.Time) (time.Time, error) {
	w := a.takeWish()
	if a.playDead(l, w.dead) {
		return time.Time{}, nil
	}
	if w.gen != l.gen {
		// A new decision deserves a prompt attempt, not the old backoff.
		l.gen, l.retryAt, l.backoff = w.gen, time.Time{}, a.backoffMin
	}
	if !w.want || !w.held {
		// Reannounce means nothing without the address; the claim that
		// may follow announces anyway.
		w.reann = ""
		l.burstLeft = 0
	}
	if now.Before(l.retryAt) && (!l.checked || w.want != w.held) {
		return l.retryAt, nil
	}

	if !l.checked {
		if err := a.checkStale(w.want); err != nil {
			return a.failed(l, now, err)
		}
		l.checked = true
	}

	switch {
	case w.want && !w.held:
		if next, stop, err := a.claimStep(l, now, w.reason); stop {
			return next, err
		}
	case !w.want && w.held:
		if err := a.release(w.reason); err != nil {
			return a.failed(l, now, err)
		}
		a.succeeded(l)
		return a.quietStep(l, now)
	case !w.want:
		return a.quietStep(l, now)
	}
	return a.hold(l, now, w)
}

// playDead acts on PlayDead and reports whether the step ends there. Dying
// forgets the held address without removing it; coming back forgets the
// loop's memory, so the next step starts with the check a restarted
// process makes.
func (a *Announcer) playDead(l *loop, dead bool) bool {
	switch {
	case dead && !l.dead:
		a.log.Warn("hard drill: playing dead, the VIP stays on the interface unannounced", "held", a.Held())
		*l = loop{dead: true, backoff: a.backoffMin}
		a.setHeld(false)
	case !dead && l.dead:
		a.log.Info("hard drill over: checking the interface as a restarted process would")
		*l = loop{backoff: a.backoffMin}
	}
	return dead
}

// claimStep adds the VIP and starts the claim's burst. stop says the step
// ends there, to resume at next: the claim failed, or someone else
// configured the VIP's IP on the interface.
func (a *Announcer) claimStep(l *loop, now time.Time, reason string) (next time.Time, stop bool, err error) {
	foreign, err := a.claim(reason)
	if err != nil {
		next, err = a.failed(l, now, err)
		return next, true, err
	}
	if foreign {
		if !l.foreign {
			a.log.Warn("VIP is configured on the interface by someone else; not taking it over",
				"reason", reason)
			l.foreign = true
		}
		a.setError(fmt.Errorf("%s on %s is configured by someone else", a.vip.Addr(), a.ifname))
		l.retryAt = now.Add(a.backoffMax)
		return l.retryAt, true, nil
	}
	l.foreign = false
	a.succeeded(l)
	a.startBurst(l, now, a.cfg.GARPCount, "claimed: "+reason)
	l.nextRefresh = now.Add(a.refreshEvery)
	if a.cfg.GARPRefresh > 0 {
		l.nextPeriod = now.Add(a.cfg.GARPRefresh)
	}
	return time.Time{}, false, nil
}

// hold does the work of a held VIP that is due at now: bursts asked for,
// answers to other hosts' announcements, the lifetime refresh, the
// periodic announcement and the next announcement of a burst, in that
// order. It returns when the next of them is due.
func (a *Announcer) hold(l *loop, now time.Time, w wish) (time.Time, error) {
	if w.reann != "" {
		a.startBurst(l, now, a.cfg.GARPCount, "reannounce: "+w.reann)
	}
	foreignDue := a.answerForeign(l, now, w.foreignAt, w.foreignMAC)
	if err := a.refreshIfDue(l, now); err != nil {
		return time.Time{}, err
	}
	if a.cfg.GARPRefresh > 0 && !now.Before(l.nextPeriod) {
		l.nextPeriod = now.Add(a.cfg.GARPRefresh)
		if l.burstLeft == 0 {
			a.startBurst(l, now, 1, periodic)
		}
	}
	if l.burstLeft > 0 && !now.Before(l.nextGARP) {
		if err := a.announce(l); err != nil {
			return time.Time{}, err
		}
		l.nextGARP = now.Add(a.cfg.GARPInterval)
	}
	return a.nextWake(l, foreignDue), nil
}

// answerForeign starts a burst to answer another host's announcement of
// the VIP at foreignAt once that host has been quiet long enough, and
// returns when the answer is due if it is not yet (zero if none waits).
func (a *Announcer) answerForeign(l *loop, now, foreignAt time.Time, mac string) time.Time {
	if foreignAt.IsZero() {
		return time.Time{}
	}
	// At most one answer per answerGap: two nodes that both hold the
	// VIP and hear each other would otherwise answer each other forever.
	due := foreignAt.Add(a.foreignQuiet())
	if !l.answeredAt.IsZero() {
		due = later(due, l.answeredAt.Add(a.answerGap()))
	}
	if now.Before(due) {
		return due
	}
	a.mu.Lock()
	if a.foreignAt.Equal(foreignAt) {
		a.foreignAt = time.Time{}
	}
	a.mu.Unlock()
	l.answeredAt = now
	a.startBurst(l, now, a.cfg.GARPCount, "another host ("+mac+") announced the VIP")
	return time.Time{}
}

// refreshIfDue renews the held VIP when its refresh is due and announces
// it again if it had vanished. Only a fatal error is returned; others are
// recorded and retried at the next refresh.
func (a *Announcer) refreshIfDue(l *loop, now time.Time) error {
	if now.Before(l.nextRefresh) {
		return nil
	}
	l.nextRefresh = now.Add(a.refreshEvery)
	missing, err := a.refresh()
	if err != nil {
		if fatal := (errFatal{}); errors.As(err, &fatal) {
			return err
		}
		a.setError(err)
		a.log.Warn("refresh VIP failed", "err", err)
		return nil
	}
	if missing {
		a.startBurst(l, now, a.cfg.GARPCount, "re-added after it vanished")
	}
	return nil
}

// nextWake is the earliest of the held VIP's pending work: the refresh,
// the periodic announcement, the burst's next announcement and the answer
// to another host (foreignDue, zero if none waits).
func (a *Announcer) nextWake(l *loop, foreignDue time.Time) time.Time {
	next := l.nextRefresh
	if a.cfg.GARPRefresh > 0 && l.nextPeriod.Before(next) {
		next = l.nextPeriod
	}
	if l.burstLeft > 0 && l.nextGARP.Before(next) {
		next = l.nextGARP
	}
	if !foreignDue.IsZero() && foreignDue.Before(next) {
		next = foreignDue
	}
	return next
}

func (a *Announcer) startBurst(l *loop, now time.Time, n int, why string) {
	if n < 1 {
		n = 1
	}
	level := slog.LevelInfo
	if why == periodic {
		// Periodic refreshes are routine; Info would drown the log.
		level = slog.LevelDebug
	}
	a.log.Log(context.Background(), level, "announcing VIP", "count", n, "interval", a.cfg.GARPInterval, "reason", why)
	if n > l.burstLeft {
		l.burstLeft = n
	}
	l.burstWhy = why
	l.nextGARP = now
}

// announce sends one announcement of the current burst, unless ownership
// was revoked since the burst started.
func (a *Announcer) announce(l *loop) error {
	a.mu.Lock()
	// A node handing the VIP off must not point clients back at itself.
	still := a.want && !a.keepQuiet
	a.mu.Unlock()
	if !still {
		l.burstLeft = 0
		return nil
	}
	l.burstLeft--
	if err := a.garp.Announce(a.ifname, a.vip.Addr()); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("announce %s on %s: needs CAP_NET_RAW: %w", a.vip.Addr(), a.ifname, err)
		}
		err = fmt.Errorf("announce %s on %s: %w", a.vip.Addr(), a.ifname, err)
		a.setError(err)
		a.log.Warn("gratuitous ARP failed", "err", err)
		return nil
	}
	a.mu.Lock()
	a.st.GARPsSent++
	a.st.LastGARP = time.Now()
	a.mu.Unlock()
	what := "sent gratuitous ARP"
	if a.vip.Addr().Is6() {
		what = "sent unsolicited neighbour advertisement"
	}
	a.log.Debug(what, "left", l.burstLeft, "reason", l.burstWhy)
	return nil
}

// ours reports whether x is the VIP's address as added by halb. IPv6
// addresses carry no label, so there a finite lifetime marks ours: an
// address configured by hand or by a network manager has none.
func (a *Announcer) ours(x Addr) bool {
	if x.Prefix.Addr() != a.vip.Addr() {
		return false
	}
	if a.vip.Addr().Is6() {
		return x.Label == a.label || (x.Label == "" && x.ValidLifetime > 0)
	}
	return x.Label == a.label
}

// checkStale removes a VIP that a previous, crashed halb left behind. An
// address with the VIP's IP but not our label is left alone.
func (a *Announcer) checkStale(want bool) error {
	addrs, err := a.link.AddrList(a.ifname)
	if err != nil {
		return a.classify("list addresses of "+a.ifname, err)
	}
	for _, x := range addrs {
		if x.Prefix.Addr() != a.vip.Addr() {
			continue
		}
		if !a.ours(x) {
			a.log.Warn("VIP is configured on the interface by someone else; leaving it alone",
				"address", x.Prefix.String(), "label", x.Label)
			continue
		}
		if want {
			// We own it already; the claim refreshes it.
			a.log.Info("adopting VIP left from an earlier run", "address", x.Prefix.String())
			continue
		}
		if err := a.link.AddrDel(a.ifname, x); err != nil {
			return a.classify(fmt.Sprintf("remove stale %s from %s", x.Prefix, a.ifname), err)
		}
		a.log.Info("removed stale VIP", "address", x.Prefix.String(), "reason", "left from an earlier run")
	}
	return nil
}

// claim adds the VIP; foreign reports that someone else configured its IP
// on the interface, in which case claim changes nothing.
func (a *Announcer) claim(reason string) (foreign bool, err error) {
	addrs, err := a.link.AddrList(a.ifname)
	if err != nil {
		return false, a.classify("list addresses of "+a.ifname, err)
	}
	for _, x := range addrs {
		if x.Prefix.Addr() == a.vip.Addr() && !a.ours(x) {
			return true, nil
		}
	}
	if err := a.link.AddrReplace(a.ifname, a.addr()); err != nil {
		return false, a.classify(fmt.Sprintf("add %s to %s", a.vip, a.ifname), err)
	}
	a.log.Info("added VIP", "reason", reason, "lifetime", a.cfg.Lifetime)
	a.clearError()
	a.mu.Lock()
	// Held again: a hand-off of this address is over, and its claim is
	// announced.
	a.st.Quiet, a.keepQuiet = false, false
	a.mu.Unlock()
	a.setHeld(true)
	return false, nil
}

func (a *Announcer) release(reason string) error {
	a.mu.Lock()
	keep := a.keepQuiet
	a.mu.Unlock()
	if keep {
		a.log.Info("released VIP; keeping the address quietly for the connections handed off", "reason", reason)
		a.mu.Lock()
		a.st.Quiet = true
		a.mu.Unlock()
		a.setHeld(false)
		return nil
	}
	if err := a.link.AddrDel(a.ifname, a.addr()); err != nil {
		return a.classify(fmt.Sprintf("remove %s from %s", a.vip, a.ifname), err)
	}
	a.log.Info("removed VIP", "reason", reason)
	a.clearError()
	a.setHeld(false)
	return nil
}

// refresh renews the lifetime of the held VIP and re-adds it if it
// vanished, e.g. because deleting the primary address took this
// secondary along.
func (a *Announcer) refresh() (missing bool, err error) {
	addrs, err := a.link.AddrList(a.ifname)
	if err != nil {
		return false, a.classify("list addresses of "+a.ifname, err)
	}
	missing = true
	for _, x := range addrs {
		if x.Prefix == a.vip && a.ours(x) {
			missing = false
		}
	}
	if err := a.link.AddrReplace(a.ifname, a.addr()); err != nil {
		return missing, a.classify(fmt.Sprintf("refresh %s on %s", a.vip, a.ifname), err)
	}
	if missing {
		a.log.Warn("VIP had vanished from the interface; re-added it")
	}
	a.clearError()
	return missing, nil
}

// quietStep keeps a quietly kept address's lifetime renewed while the
// hand-off wants it, and removes it once it does not.
func (a *Announcer) quietStep(l *loop, now time.Time) (time.Time, error) {
	a.mu.Lock()
	quiet, keep := a.st.Quiet, a.keepQuiet
	a.mu.Unlock()
	switch {
	case !quiet:
		return time.Time{}, nil
	case !keep:
		if err := a.link.AddrDel(a.ifname, a.addr()); err != nil {
			return a.failed(l, now, a.classify(fmt.Sprintf("remove %s from %s", a.vip, a.ifname), err))
		}
		a.log.Info("removed VIP", "reason", "hand-off over")
		a.mu.Lock()
		a.st.Quiet = false
		a.mu.Unlock()
		return time.Time{}, nil
	}
	if !now.Before(l.nextRefresh) {
		l.nextRefresh = now.Add(a.refreshEvery)
		if err := a.link.AddrReplace(a.ifname, a.addr()); err != nil {
			return a.failed(l, now, a.classify(fmt.Sprintf("refresh quiet %s on %s", a.vip, a.ifname), err))
		}
	}
	return l.nextRefresh, nil
}

// withdraw removes a held (or quietly kept) VIP on the way out of Run.
func (a *Announcer) withdraw(reason string) {
	a.mu.Lock()
	quiet := a.st.Quiet
	a.st.Quiet = false
	a.mu.Unlock()
	if !a.Held() && !quiet {
		return
	}
	if err := a.link.AddrDel(a.ifname, a.addr()); err != nil {
		a.log.Error("withdraw VIP failed; it expires by itself", "err", err, "lifetime", a.cfg.Lifetime)
		a.setError(err)
	} else {
		a.log.Info("removed VIP", "reason", reason)
	}
	a.setHeld(false)
}

func (a *Announcer) addr() Addr {
	return Addr{Prefix: a.vip, Label: a.label, ValidLifetime: a.cfg.Lifetime}
}

// classify wraps err with what was being done and marks permission
// errors fatal: no retry gives a process CAP_NET_ADMIN.
func (a *Announcer) classify(doing string, err error) error {
	if errors.Is(err, os.ErrPermission) {
		return errFatal{fmt.Errorf("%s: needs CAP_NET_ADMIN: %w", doing, err)}
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// failed records err and schedules a retry with backoff, or passes a
// fatal err up.
func (a *Announcer) failed(l *loop, now time.Time, err error) (time.Time, error) {
	if fatal := (errFatal{}); errors.As(err, &fatal) {
		return time.Time{}, err
	}
	a.setError(err)
	a.log.Warn("VIP operation failed; will retry", "err", err, "retry_in", l.backoff)
	l.retryAt = now.Add(l.backoff)
	l.backoff = min(2*l.backoff, a.backoffMax)
	return l.retryAt, nil
}

func (a *Announcer) succeeded(l *loop) {
	l.retryAt, l.backoff = time.Time{}, a.backoffMin
	a.clearError()
}

func (a *Announcer) setHeld(held bool) {
	a.mu.Lock()
	if a.st.Held == held {
		a.mu.Unlock()
		return
	}
	a.st.Held = held
	a.st.Since = time.Now()
	a.st.Transitions++
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

func (a *Announcer) setError(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.LastError = err.Error()
}

func (a *Announcer) clearError() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.LastError = ""
}

// barrier returns a channel closed once Run has finished a step that saw
// every request made before the call. Tests use it to know a request was
// acted on, or ignored, without sleeping.
func (a *Announcer) barrier() <-chan struct{} {
	w := make(chan struct{})
	a.mu.Lock()
	a.waiters = append(a.waiters, w)
	a.mu.Unlock()
	a.poke()
	return w
}
