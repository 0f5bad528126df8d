package daemon

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"halb/internal/cluster"
	"halb/internal/config"
	"halb/internal/conntable"
	"halb/internal/proxy"
	"halb/internal/tickle"
)

// Tickle ACKs on takeover (docs/tickle.md): the holder of a VIP keeps the
// table of its client connections through it and shares it with the peers;
// the node that takes the VIP over tickles every connection the previous
// holder had, so idle clients learn at once that the connection is gone.

// Timing of the connection-table sharing.
const (
	// shareEvery is how often a holder syncs its tables from the proxy
	// and sends the peers what changed.
	shareEvery = 200 * time.Millisecond
	// expireEvery is how often replicas of silent nodes are dropped.
	expireEvery = time.Minute
	// requestEvery bounds the snapshot requests to one origin's table: a
	// receiver that is behind gets several deltas before the snapshot
	// arrives, and each would otherwise ask again.
	requestEvery = time.Second
	// answerGrace is how long answers are counted after the last tickle
	// was written: a client's duplicate ACK comes within a round trip,
	// a millisecond on a LAN, or later behind a queue.
	answerGrace = 200 * time.Millisecond
	// reconnectWatch bounds how long a takeover waits for the tickled
	// clients to reconnect before it reports how many did.
	reconnectWatch = 30 * time.Second
)

// TickleWriter is the raw socket tickles are written to.
type TickleWriter interface {
	tickle.Writer
	Close() error
}

// TickleOpener opens the raw socket on the VIP's interface; tickle.OpenRaw
// wrapped by openRaw is the real one.
type TickleOpener func(ifname string, ipv6 bool) (TickleWriter, error)

func openRaw(ifname string, ipv6 bool) (TickleWriter, error) { return tickle.OpenRaw(ifname, ipv6) }

// answerCounter counts the answers to one takeover's tickles until its
// context ends; tickle.Capture is the real one.
type answerCounter interface {
	Count(ctx context.Context) (tickle.Answers, error)
	// Settled and Acked tell the sender, while Count runs, which
	// connections need no repeat and which answered with an ACK
	// (tickle.Answered).
	tickle.Answered
	// Closed lists, once Count returned, the connections whose client
	// answered with a reset (tickle.Tally.Closed).
	Closed() []tickle.Target
}

// answerListener opens an answerCounter on the VIP's interface before the
// tickles go out.
type answerListener func(ifname string, vip netip.Addr, targets []tickle.Target) (answerCounter, error)

func openCapture(ifname string, vip netip.Addr, targets []tickle.Target) (answerCounter, error) {
	return tickle.OpenCapture(ifname, vip, targets)
}

// connShare is the cluster's part: sending and receiving table messages.
type connShare interface {
	SendConns(node string, m cluster.ConnsMsg) error
	ConnsMessages() <-chan cluster.ConnsMsg
	Members() []cluster.Member
}

// sessionList lists the proxy's open sessions (serving is the real one).
type sessionList interface {
	clients(dst []proxy.ClientPair) []proxy.ClientPair
	// clientsVersion changes whenever clients might list something
	// else; read it before clients.
	clientsVersion() uint64
	// closeSessions resets the sessions of pairs started before before:
	// orphans whose client answered a tickle with a reset.
	closeSessions(pairs map[proxy.ClientPair]struct{}, before time.Time, reason string) int
}

// relistEvery bounds how long share trusts an unchanged version: a full
// listing at least this often costs little and would mend any change a
// version missed.
const relistEvery = 5 * time.Second

// tickles keeps this node's connection tables, its replicas of the peers'
// and tickles on takeover. observe is called by the election loop; run
// does the rest in its own goroutine.
type tickles struct {
	log      *slog.Logger
	self     string
	net      connShare
	sessions sessionList // every frontend's open sessions
	open     TickleOpener
	listen   answerListener
	rounds   []time.Duration // nil: tickle.DefaultRounds; tests shorten them
	store    *conntable.Store

	kick chan struct{} // a takeover is pending

	// onOffer takes the peers' hand-off offers (handoff.go); nil drops
	// them.
	onOffer func(cluster.ConnsMsg)

	mu   sync.Mutex
	vips map[netip.Addr]*vipConns
	// extra are tickles asked for outside a takeover: the connections of
	// an old holder that died while handing them off.
	extra []tickleJob
}

// vipConns is the tickle state of one VIP.
type vipConns struct {
	ifname string
	on     bool // vips[].tickle
	rate   int
	spread time.Duration
	table  *conntable.Table // this node's, synced while it holds the VIP
	sent   uint64           // the table version the peers were last sent
	// synced is the sessions' version the table was last synced to,
	// plus one (0: never), and syncedAt when.
	synced   uint64
	syncedAt time.Time

	held    bool // as the election loop last saw it
	pending bool // taken over, tickles not yet started
	asked   map[string]time.Time

	lastTickled int       // connections tickled at the last takeover
	lastMove    time.Time // when that takeover started
	last        takeoverOutcome

	// handedBy is the peer whose connections this node forwards to it
	// (handoff.go): a takeover does not tickle them.
	handedBy string
	// handing: this node released the VIP and still serves its
	// connections, so it keeps sharing its table. keepOwn: the table is
	// of live connections, which a takeover here must not tickle.
	handing, keepOwn bool
}

// takeoverOutcome is what the last takeover's tickles achieved, filled in
// as it becomes known.
type takeoverOutcome struct {
	answers  tickle.Answers
	counted  bool                    // answers is known
	waiting  map[netip.Addr]struct{} // tickled client addresses not yet back
	clients  int                     // distinct client addresses tickled
	backAt   time.Duration           // after the move, when the last came back
	watching bool                    // still looking for reconnections
}

// TickleStatus is one VIP's connection table and last tickle, for status.
type TickleStatus struct {
	Table       int // connections in the holder's table as known here
	LastTickled int
	LastMove    time.Time
	// Answers counts the clients that answered the last takeover's
	// tickles; Counted says whether it is known yet (or could be).
	Answers tickle.Answers
	Counted bool
	// Clients is how many distinct client addresses were tickled, and
	// Reconnected how many of them had a connection through the VIP again
	// ReconnectedWithin after the move (seen at the 200 ms table sync).
	Clients, Reconnected int
	ReconnectedWithin    time.Duration
}

func newTickles(self string, net connShare, vips []config.VIP, ifnames []string,
	sessions sessionList, open TickleOpener, log *slog.Logger) *tickles {
	t := &tickles{
		log: log.With("component", "tickle"), self: self, net: net, sessions: sessions, open: open, listen: openCapture,
		store: conntable.NewStore(conntable.Limits{}),
		kick:  make(chan struct{}, 1),
		vips:  map[netip.Addr]*vipConns{},
	}
	epoch := rand.Uint64()
	for i, v := range vips {
		// With BGP every eligible node holds the VIP and serves its own
		// connections: a node that starts announcing must not reset its
		// peers' live ones.
		if v.Announce == config.AnnounceBGP {
			continue
		}
		addr := v.Address.Addr()
		t.vips[addr] = &vipConns{ifname: ifnames[i], on: v.Tickle, rate: v.TickleRate, spread: v.TickleSpread,
			table: conntable.NewTable(addr, epoch), asked: map[string]time.Time{}}
	}
	return t
}

// observe takes whether this node holds the VIP now, after the election
// loop applied a round. A VIP that became held here is a takeover; run
// tickles in its own goroutine, so the loop never waits for the sending.
func (t *tickles) observe(addr netip.Addr, held bool) {
	if t == nil {
		return // no cluster section: no VIPs
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.vips[addr]
	if !ok || v.held == held {
		return
	}
	v.held = held
	if held {
		v.pending = true
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// status describes the VIP's table and last tickle.
func (t *tickles) status(addr netip.Addr) TickleStatus {
	if t == nil {
		return TickleStatus{}
	}
	t.mu.Lock()
	v, ok := t.vips[addr]
	if !ok {
		t.mu.Unlock()
		return TickleStatus{}
	}
	st := TickleStatus{LastTickled: v.lastTickled, LastMove: v.lastMove,
		Answers: v.last.answers, Counted: v.last.counted,
		Clients: v.last.clients, Reconnected: v.last.clients - len(v.last.waiting), ReconnectedWithin: v.last.backAt}
	if v.held {
		st.Table = v.table.Len()
	}
	t.mu.Unlock()
	if st.Table == 0 {
		// A standby shows the holder's table, as it last received it.
		for _, s := range t.store.Stats() {
			if s.VIP == addr {
				st.Table += s.Conns
			}
		}
	}
	return st
}

// run shares the tables, applies the peers' and tickles on takeover until
// ctx ends; it returns once the tickles it started have stopped.
func (t *tickles) run(ctx context.Context) error {
	var sends sync.WaitGroup
	defer sends.Wait()
	share := time.NewTicker(shareEvery)
	defer share.Stop()
	expire := time.NewTicker(expireEvery)
	defer expire.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.kick:
			for _, job := range t.takeovers() {
				sends.Go(func() { t.send(ctx, job) })
			}
		case <-share.C:
			t.share()
		case m := <-t.net.ConnsMessages():
			t.receive(m, time.Now())
		case now := <-expire.C:
			if n := t.store.Expire(now); n > 0 {
				t.log.Info("dropped the connection tables of silent nodes", "tables", n)
			}
		}
	}
}

// tickleJob is one takeover's tickles.
type tickleJob struct {
	vip     netip.Addr
	ifname  string
	rate    int
	spread  time.Duration
	targets []tickle.Target
	own     bool      // this node's own sessions (tickleOwn), not a previous holder's
	listed  time.Time // when own targets were listed: later sessions are not theirs
}

// takeovers collects, for each VIP taken over since the last call, the
// connections to tickle: every peer's replica of that VIP (the previous
// holder's, and any older holder's not yet expired) and this node's own
// table from an earlier tenure, which the next sync replaces. The
// replicas are forgotten: their connections are dealt with.
func (t *tickles) takeovers() []tickleJob {
	t.mu.Lock()
	defer t.mu.Unlock()
	var jobs []tickleJob
	stats := t.store.Stats()
	for addr, v := range t.vips {
		if !v.pending {
			continue
		}
		v.pending = false
		seen := map[conntable.Conn]struct{}{}
		if !v.keepOwn {
			for _, c := range v.table.Conns() {
				seen[c] = struct{}{}
			}
		}
		v.keepOwn = false
		for _, s := range stats {
			if s.VIP != addr || s.Node == t.self || s.Node == v.handedBy {
				continue
			}
			conns, _ := t.store.Conns(s.Source)
			for _, c := range conns {
				seen[c] = struct{}{}
			}
			t.store.Forget(s.Source)
		}
		v.lastMove = time.Now()
		v.last = takeoverOutcome{}
		if !v.on {
			v.lastTickled = 0
			t.log.Info("took the VIP over; tickles are off", "vip", addr, "connections", len(seen))
			continue
		}
		job := tickleJob{vip: addr, ifname: v.ifname, rate: v.rate, spread: v.spread, targets: make([]tickle.Target, 0, len(seen))}
		v.last.waiting = map[netip.Addr]struct{}{}
		for c := range seen {
			job.targets = append(job.targets, tickle.Target{VIP: c.VIP, Client: c.Client})
			v.last.waiting[c.Client.Addr().Unmap()] = struct{}{}
		}
		v.last.clients, v.last.watching = len(v.last.waiting), len(v.last.waiting) > 0
		v.lastTickled = len(job.targets)
		if len(job.targets) == 0 {
			t.log.Info("took the VIP over; no connections of a previous holder to tickle", "vip", addr)
			continue
		}
		jobs = append(jobs, job)
	}
	jobs = append(jobs, t.extra...)
	t.extra = nil
	return jobs
}

// handOff tells the tickles that this node forwards the connections of
// peer ("" for none) through addr to it, so a takeover leaves them alone.
// It must be called before the claim is observed.
func (t *tickles) handOff(addr netip.Addr, peer string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.vips[addr]; ok {
		v.handedBy = peer
	}
}

// setHanding says whether this node serves connections through addr it
// handed off, which keeps its table shared.
func (t *tickles) setHanding(addr netip.Addr, on bool) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.vips[addr]; ok {
		v.handing = on
		v.keepOwn = v.keepOwn || on
	}
}

// liveAware keeps the sender's own resets (tickle.BuildReset) away from
// this node's live sessions: a client of one answers a tickle with an ACK
// that lands on the live socket here, harmlessly, and a reset would end a
// working connection (an earlier tenure's, or one this node's tickleOwn
// checks). The set of live pairs is read at most every liveEvery.
type liveAware struct {
	tickle.Answered
	sessions sessionList
	live     map[proxy.ClientPair]struct{}
	at       time.Time
}

// liveEvery bounds how stale liveAware's view of the sessions may be; the
// resets go out a round (100 ms) after the answers.
const liveEvery = 20 * time.Millisecond

// Acked implements tickle.Answered: a live session here is never acked.
func (l *liveAware) Acked(tg tickle.Target) (uint32, bool) {
	seq, ok := l.Answered.Acked(tg)
	if !ok {
		return 0, false
	}
	if now := time.Now(); l.live == nil || now.Sub(l.at) >= liveEvery {
		l.live, l.at = map[proxy.ClientPair]struct{}{}, now
		for _, p := range l.sessions.clients(nil) {
			l.live[p] = struct{}{}
		}
	}
	if _, live := l.live[clientPair(tg)]; live {
		return 0, false
	}
	return seq, true
}

// clientPair is the proxy's name for a tickled connection, addresses
// unmapped as the proxy lists them.
func clientPair(tg tickle.Target) proxy.ClientPair {
	unmap := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
	return proxy.ClientPair{Local: unmap(tg.VIP), Client: unmap(tg.Client)}
}

// tickleOwn tickles this node's own sessions through addr, as last synced:
// another node held the VIP meanwhile (this node was cut off or frozen)
// and has let go. That holder reset the clients it took over, and this
// node never heard: their sessions here are orphans, holding sockets and
// backend connections until an idle timeout, and would be shared and
// tickled again at every later move. A tickled client without the
// connection answers with a reset that ends the orphan here (after the
// challenge ACK its first, unacceptable reset draws); one whose
// connection is alive through this node answers with a duplicate ACK,
// which its live socket here takes without harm. It returns how many it
// queued.
func (t *tickles) tickleOwn(addr netip.Addr) int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.vips[addr]
	if !ok || !v.on || !v.held {
		return 0
	}
	job := tickleJob{vip: addr, ifname: v.ifname, rate: v.rate, spread: v.spread, own: true, listed: v.syncedAt}
	for _, c := range v.table.Conns() {
		job.targets = append(job.targets, tickle.Target{VIP: c.VIP, Client: c.Client})
	}
	if len(job.targets) == 0 {
		return 0
	}
	t.extra = append(t.extra, job)
	select {
	case t.kick <- struct{}{}:
	default:
	}
	return len(job.targets)
}

// tickleFrom tickles the connections through addr of peer as last
// received, and forgets them: the peer died while they were handed off.
// It returns how many it queued.
func (t *tickles) tickleFrom(addr netip.Addr, peer string) int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.vips[addr]
	if !ok {
		return 0
	}
	if v.handedBy == peer {
		v.handedBy = ""
	}
	job := tickleJob{vip: addr, ifname: v.ifname, rate: v.rate, spread: v.spread}
	for _, s := range t.store.Stats() {
		if s.VIP != addr || s.Node != peer {
			continue
		}
		conns, _ := t.store.Conns(s.Source)
		for _, c := range conns {
			job.targets = append(job.targets, tickle.Target{VIP: c.VIP, Client: c.Client})
		}
		t.store.Forget(s.Source)
	}
	if !v.on || len(job.targets) == 0 {
		return 0
	}
	v.lastTickled, v.lastMove = len(job.targets), time.Now()
	t.extra = append(t.extra, job)
	select {
	case t.kick <- struct{}{}:
	default:
	}
	return len(job.targets)
}

// send tickles one takeover's connections, counts the clients that
// answer and logs both: "tickled N, acknowledged M".
func (t *tickles) send(ctx context.Context, job tickleJob) {
	log := t.log.With("vip", job.vip, "iface", job.ifname)
	w, err := t.open(job.ifname, job.vip.Is6())
	if err != nil {
		log.Warn("cannot tickle the previous holder's connections: clients learn at their next keep-alive", "connections", len(job.targets), "err", err)
		return
	}
	defer func() { _ = w.Close() }()
	s, err := tickle.NewSender(w, tickle.Options{Rate: job.rate, Rounds: t.rounds, Spread: job.spread})
	if err != nil {
		log.Warn("cannot tickle the previous holder's connections", "err", err)
		return
	}
	// The count must listen before the first tickle leaves.
	counted := make(chan tickle.Answers, 1)
	cctx, stopCount := context.WithCancel(ctx)
	defer stopCount()
	var settled tickle.Answered // without a count every round repeats all
	var capture answerCounter
	if c, err := t.listen(job.ifname, job.vip, job.targets); err != nil {
		log.Warn("cannot count the answers to the tickles", "err", err)
		close(counted)
	} else {
		settled, capture = &liveAware{Answered: c, sessions: t.sessions}, c
		go func() {
			a, err := c.Count(cctx)
			if err != nil {
				log.Warn("count the answers to the tickles", "err", err)
			}
			counted <- a
			close(counted)
		}()
	}
	start := time.Now()
	res, err := s.SendSkipping(ctx, job.targets, settled)
	took := time.Since(start)
	if err == nil {
		select {
		case <-ctx.Done():
		case <-time.After(answerGrace):
		}
	}
	stopCount()
	answers, ok := <-counted
	attrs := []any{"tickled", res.Targets}
	if ok {
		attrs = append(attrs, "acknowledged", answers.Acknowledged, "already_closed", answers.Closed)
	} else {
		attrs = append(attrs, "acknowledged", "unknown")
	}
	attrs = append(attrs, "sent", res.Sent, "repeats_skipped", res.Skipped, "resets", res.Resets, "failed", res.Failed, "took", took.Round(time.Millisecond))
	if answers.Dropped > 0 {
		attrs = append(attrs, "answers_dropped", answers.Dropped)
	}
	if res.FirstErr != nil {
		attrs = append(attrs, "err", res.FirstErr)
	}
	t.mu.Lock()
	if v := t.vips[job.vip]; v != nil && !job.own {
		v.last.answers, v.last.counted = answers, ok
	}
	t.mu.Unlock()
	whose := "the previous holder's connections"
	if job.own {
		whose = "this node's own connections, orphaned while another node held the VIP"
		// The client's reset carries the tickle's numbers, which this
		// node's socket rejects; the capture knows which clients had no
		// connection left, so their sessions end here.
		if ok && capture != nil {
			pairs := map[proxy.ClientPair]struct{}{}
			for _, tg := range capture.Closed() {
				pairs[clientPair(tg)] = struct{}{}
			}
			attrs = append(attrs, "orphans_closed", t.sessions.closeSessions(pairs, job.listed, "orphaned: the client has no connection"))
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		log.Info("tickles stopped: shutting down", attrs...)
	case err != nil || res.Failed > 0 || res.Built < res.Targets:
		log.Warn("tickled "+whose+", some not", attrs...)
	default:
		log.Info("tickled "+whose, attrs...)
	}
}

// share syncs the tables of the VIPs held here from the proxy's sessions
// and sends every alive peer what changed since the last time: a delta,
// empty when nothing did, which also tells the peers the table is alive.
func (t *tickles) share() {
	var peers []string
	for _, m := range t.net.Members() {
		if m.Alive && !m.Local {
			peers = append(peers, m.Name)
		}
	}
	now := time.Now()
	ver, list, held := t.needsListing(now)
	if !held {
		return
	}
	var byVIP map[netip.Addr][]conntable.Conn
	if list {
		byVIP = map[netip.Addr][]conntable.Conn{}
		for _, p := range t.sessions.clients(nil) {
			byVIP[p.Local.Addr()] = append(byVIP[p.Local.Addr()], conntable.Conn{VIP: p.Local, Client: p.Client})
		}
	}
	t.mu.Lock()
	var out [][]byte
	for addr, v := range t.vips {
		if (!v.held && !v.handing) || v.pending {
			continue // a pending takeover still needs the earlier tenure's table
		}
		if byVIP != nil {
			if err := v.table.Sync(byVIP[addr]); err != nil {
				t.log.Warn("sync the connection table", "vip", addr, "err", err)
				continue
			}
			v.synced, v.syncedAt = ver, now
		}
		t.watchReconnects(addr, v, byVIP[addr], now)
		chunks, err := v.table.Encode(v.sent, conntable.DefaultChunk)
		if err != nil {
			t.log.Warn("encode the connection table", "vip", addr, "err", err)
			continue
		}
		v.sent = v.table.Version()
		out = append(out, chunks...)
	}
	t.mu.Unlock()
	for _, p := range peers {
		for _, c := range out {
			if err := t.net.SendConns(p, cluster.ConnsMsg{Kind: cluster.ConnsChunk, Payload: c}); err != nil {
				t.log.Debug("send the connection table", "peer", p, "err", err)
				break
			}
		}
	}
}

// needsListing reports whether any VIP is held or handed off here (held)
// and whether a table to sync may be out of date: listing every session
// each tick is what a large idle table would cost, and while the
// sessions' version stands the tables are what they were. ver is the
// version to note once synced, plus one.
func (t *tickles) needsListing(now time.Time) (ver uint64, list, held bool) {
	ver = t.sessions.clientsVersion() + 1
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, v := range t.vips {
		if !v.held && !v.handing {
			continue
		}
		held = true
		if !v.pending && (v.synced != ver || now.Sub(v.syncedAt) >= relistEvery) {
			list = true
		}
	}
	return ver, list, held
}

// watchReconnects notes which of the last takeover's tickled clients
// have a connection through the VIP again, and logs once all have, or
// once reconnectWatch has passed. Addresses, not connections: a client
// reconnects from a new port.
func (t *tickles) watchReconnects(addr netip.Addr, v *vipConns, conns []conntable.Conn, now time.Time) {
	o := &v.last
	if !o.watching {
		return
	}
	before := len(o.waiting)
	for _, c := range conns {
		delete(o.waiting, c.Client.Addr().Unmap())
	}
	after := now.Sub(v.lastMove)
	if len(o.waiting) < before {
		o.backAt = after
	}
	switch {
	case len(o.waiting) == 0:
		o.watching = false
		t.log.Info("every tickled client reconnected", "vip", addr, "clients", o.clients, "within", o.backAt.Round(time.Millisecond))
	case after > reconnectWatch:
		o.watching = false
		t.log.Info("not every tickled client reconnected", "vip", addr, "clients", o.clients,
			"reconnected", o.clients-len(o.waiting), "within", reconnectWatch)
	}
}

// receive applies a peer's chunk to the replicas, or answers its snapshot
// request.
func (t *tickles) receive(m cluster.ConnsMsg, now time.Time) {
	switch m.Kind {
	case cluster.ConnsChunk:
		src, st, err := t.store.Apply(m.From, m.Payload, now)
		if err != nil {
			t.log.Debug("ignored a connection-table chunk", "peer", m.From, "err", err)
			return
		}
		if st != conntable.NeedSnapshot || !t.mayAsk(src, now) {
			return
		}
		if err := t.net.SendConns(m.From, cluster.ConnsMsg{Kind: cluster.ConnsRequest, Payload: src.VIP.AsSlice()}); err != nil {
			t.log.Debug("ask for a connection-table snapshot", "peer", m.From, "err", err)
		}
	case cluster.ConnsHandoff:
		if t.onOffer != nil {
			t.onOffer(m)
		}
	case cluster.ConnsRequest:
		addr, ok := netip.AddrFromSlice(m.Payload)
		if !ok {
			return
		}
		t.mu.Lock()
		v, ok := t.vips[addr]
		var chunks [][]byte
		var err error
		if ok && (v.held || v.handing) {
			chunks, err = v.table.Snapshot(conntable.DefaultChunk)
		}
		t.mu.Unlock()
		if err != nil {
			t.log.Warn("encode a connection-table snapshot", "vip", addr, "err", err)
		}
		for _, c := range chunks {
			if err := t.net.SendConns(m.From, cluster.ConnsMsg{Kind: cluster.ConnsChunk, Payload: c}); err != nil {
				t.log.Debug("send a connection-table snapshot", "peer", m.From, "err", err)
				return
			}
		}
	}
}

// mayAsk reports whether a snapshot of src may be requested now, and if
// so notes the request.
func (t *tickles) mayAsk(src conntable.Source, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.vips[src.VIP]
	if !ok {
		return false // a VIP this node does not serve: nothing to tickle
	}
	if now.Sub(v.asked[src.Node]) < requestEvery {
		return false
	}
	v.asked[src.Node] = now
	return true
}
