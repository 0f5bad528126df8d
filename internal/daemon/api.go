package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"halb/internal/admin"
	"halb/internal/cluster"
	"halb/internal/config"
	"halb/internal/pool"
)

// operatorAPI is what the admin socket, the stats page and the metrics
// see of the daemon: status, maintenance, server states, reload, drills
// and keys.
type operatorAPI struct {
	name     string // the node's name, also without a cluster
	version  string
	srv      *serving
	ctl      *controller
	reloader *reloader
	drills   *drills
	keys     *keyManager
	state    *adminStore // the state file and cluster-wide changes (adminstate.go)

	mu    sync.Mutex
	rates map[string]rateSample // frontend -> last look, for the rate
}

// The admin server finds the optional interfaces by type assertion; these
// make a missing method a compile error instead of a 501 at run time.
var (
	_ admin.Source     = (*operatorAPI)(nil)
	_ admin.Controller = (*operatorAPI)(nil)
	_ admin.Reloader   = (*operatorAPI)(nil)
	_ admin.Driller    = (*operatorAPI)(nil)
	_ admin.KeyManager = (*operatorAPI)(nil)
)

// Reload implements admin.Reloader.
func (o *operatorAPI) Reload() error { return o.reloader.Reload() }

// StartDrill implements admin.Driller: it asks the VIP's holder to leave
// the election (or to go silent, for a hard drill) and the target to
// outrank everyone, so the election moves the VIP, make before break.
func (o *operatorAPI) StartDrill(req admin.DrillRequest) (admin.DrillStart, error) {
	return o.drills.start(req)
}

// EndDrill implements admin.Driller: the holder rejoins the election and
// the target's boost ends.
func (o *operatorAPI) EndDrill() error { return o.drills.end() }

// Keys implements admin.KeyManager.
func (o *operatorAPI) Keys() (admin.Keyring, error) { return o.keys.Keys() }

// InstallKey implements admin.KeyManager: key decrypts from now on; this
// node goes on encrypting with its primary key.
func (o *operatorAPI) InstallKey(key []byte) (admin.Keyring, error) { return o.keys.InstallKey(key) }

// UseKey implements admin.KeyManager: this node encrypts with the key.
func (o *operatorAPI) UseKey(ref admin.KeyRef) (admin.Keyring, error) { return o.keys.UseKey(ref) }

// RemoveKey implements admin.KeyManager; the primary key is refused.
func (o *operatorAPI) RemoveKey(ref admin.KeyRef) (admin.Keyring, error) {
	return o.keys.RemoveKey(ref)
}

// Snapshot implements admin.Source: everything `halb status` shows.
func (o *operatorAPI) Snapshot() admin.Snapshot {
	now := time.Now()
	f, v := o.ctl.snapshot()
	o.srv.mu.Lock()
	cfg, pools, fronts := o.srv.cfg, o.srv.pools, o.srv.frontends
	o.srv.mu.Unlock()
	s := admin.Snapshot{
		Time: now,
		Node: admin.NodeInfo{
			Name:        o.name,
			Version:     o.version,
			Uptime:      now.Sub(f.started).Seconds(),
			StartedAt:   f.started,
			Fingerprint: cfg.Fingerprint,
			Maintenance: f.maintained,
		},
	}
	if o.ctl.cluster != nil {
		s.Node.StatePulls = o.ctl.cluster.StatePulls()
	}
	s.Node.Roles, s.VIPs = o.vips(v, now)
	s.Members = o.members(cfg, v)
	if o.ctl.bgp != nil {
		s.BGP = o.ctl.bgp.status()
	}
	for _, fr := range fronts {
		fs := fr.f.Stats()
		fc := fr.cfg
		s.Frontends = append(s.Frontends, admin.Frontend{
			Name: fc.Name, Bind: fc.Bind.String(), Backend: fc.Backend,
			Current: fs.Current, Total: fs.Total, Rejected: fs.Rejected,
			Rate:    o.rate(fc.Name, fs.Total, now, f.started),
			BytesIn: fs.BytesIn, BytesOut: fs.BytesOut, MaxConn: fc.MaxConn,
			ListenError: listenError(fr),
		})
	}
	for _, b := range cfg.Backends {
		p := pools[b.Name]
		ab := admin.Backend{Name: b.Name, Balance: string(b.Balance), Healthy: p.Healthy(), Panic: p.Panic()}
		for _, srv := range p.Servers() {
			ab.Servers = append(ab.Servers, backendServer(srv.Stats(), now))
		}
		s.Backends = append(s.Backends, ab)
	}
	return s
}

// vips is each VIP's state and this node's role for it.
func (o *operatorAPI) vips(v view, now time.Time) ([]admin.VIPRole, []admin.VIP) {
	var roles []admin.VIPRole
	var vips []admin.VIP
	for _, a := range o.ctl.announcers {
		st := a.a.Status()
		addr := a.cfg.Address.Addr().String()
		owner := v.holder[addr]
		role := admin.VIPRole{VIP: addr, Role: admin.RoleStandby, Why: "elected holder is " + owner}
		switch {
		case st.Held && owner == o.name:
			role = admin.VIPRole{VIP: addr, Role: admin.RoleHolder, Why: "elected: best eligible node"}
		case st.Held:
			role = admin.VIPRole{VIP: addr, Role: admin.RoleReleasing, Why: "waiting for " + owner + " to take it (make before break)"}
		case owner == "":
			role.Why = "no holder elected yet"
		}
		at := v.preempt[addr]
		if !at.IsZero() && role.Role == admin.RoleStandby {
			role.Why += fmt.Sprintf("; this node takes it over in %s (preempt_delay)", admin.Duration(max(0, at.Sub(now))))
		}
		roles = append(roles, role)
		vips = append(vips, admin.VIP{
			Address:     addr,
			Interface:   st.Interface,
			Holder:      owner,
			HeldHere:    st.Held,
			Since:       st.Since,
			Elected:     v.elected[addr],
			LastGARP:    st.LastGARP,
			GARPsSent:   st.GARPsSent,
			Transitions: st.Transitions,
			LastError:   st.LastError,
			PreemptAt:   at,
			Mode:        string(config.AnnounceARP),
		})
		tk := o.ctl.tickles.status(a.cfg.Address.Addr())
		last := &vips[len(vips)-1]
		last.ConnTable, last.LastTickled, last.LastTakeover = tk.Table, tk.LastTickled, tk.LastMove
		if tk.Clients > 0 {
			last.LastTickles = &admin.TickleOutcome{
				Counted: tk.Counted, Acknowledged: tk.Answers.Acknowledged, AlreadyClosed: tk.Answers.Closed,
				Clients: tk.Clients, Reconnected: tk.Reconnected, ReconnectedWithin: tk.ReconnectedWithin.Seconds(),
			}
		}
		if h := o.ctl.handoffs.status(a.cfg.Address.Addr()); !h.Since.IsZero() {
			last.Handoff = &admin.Handoff{Role: h.Role, Peer: h.Peer, HandedOff: h.HandedOff, Forwarded: h.Forwarded,
				ClosedAtDrain: h.ClosedAtDrain, Since: h.Since, Ended: h.Ended, EndReason: h.EndReason}
		}
	}
	return roles, vips
}

// members lists the members this node sees, and the configured nodes it
// does not: a member cut off by a partition must stand out in `halb
// status`.
func (o *operatorAPI) members(cfg *config.Config, v view) []admin.Member {
	if o.ctl.cluster == nil {
		return nil
	}
	var out []admin.Member
	present := map[string]bool{}
	for _, m := range o.ctl.cluster.Members() {
		out = append(out, member(m))
		present[m.Name] = true
	}
	for _, n := range cfg.Cluster.Nodes {
		if !present[n.Name] {
			out = append(out, admin.Member{
				Name:      n.Name,
				Address:   netip.AddrPortFrom(n.Address, uint16(cfg.Cluster.Port)).String(),
				Priority:  n.Priority,
				LastHeard: v.lastSeen[n.Name],
			})
		}
	}
	slices.SortFunc(out, func(a, b admin.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func member(m cluster.Member) admin.Member {
	return admin.Member{
		Name:        m.Name,
		Address:     m.Addr.String(),
		Alive:       m.Alive,
		Local:       m.Local,
		Priority:    m.State.Priority,
		Eligible:    m.State.Eligible,
		Maintenance: m.State.Maintenance,
		Frontends:   m.State.Frontends,
		Holds:       m.State.Holds,
		HolderView:  m.State.Holder,
		Fingerprint: m.State.Fingerprint,
		Version:     m.State.Version,
		LastHeard:   m.LastHeard,
		StateErr:    m.StateErr,
		HeardVia:    m.HeardVia,
		Disputed:    m.Disputed,
		Watched:     m.Watched,
	}
}

func backendServer(st pool.ServerStats, now time.Time) admin.BackendServer {
	state := admin.StateUnknown
	switch {
	case st.Admin == pool.Disabled:
		state = admin.StateDisabled
	case st.Admin == pool.Drain:
		state = admin.StateDrain
	case !st.Known:
	case st.Up:
		state = admin.StateUp
	default:
		state = admin.StateDown
	}
	failure := ""
	if st.Known && !st.LastCheck.OK && !st.LastCheck.At.IsZero() {
		failure = st.LastCheck.Failure.String()
	}
	return admin.BackendServer{
		Name: st.Name, Address: st.Address.String(), State: state, Since: st.Since,
		LastCheck: st.LastCheck.Reason, LastCheckOK: st.LastCheck.OK, CheckFailure: failure,
		CheckLatencyMS: float64(st.LastCheck.Latency.Microseconds()) / 1000,
		Current:        st.Active, Total: st.Total, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
		Retries: st.Retries, ConnectFailures: st.ConnectFailures, Backup: st.Backup, Weight: st.Weight,
		Peak: st.PeakActive, FailedChecks: st.FailedChecks, DownTransitions: st.DownTransitions,
		Downtime: st.TotalDowntime(now).Seconds(),
	}
}

// SetMaintenance implements admin.Controller: a node in maintenance is not
// eligible, so the election hands its VIPs to a peer, make before break.
// It is kept in the state file, so a restart stays in maintenance.
func (o *operatorAPI) SetMaintenance(on bool) error {
	if o.ctl.cluster == nil {
		return fmt.Errorf("this node has no cluster section: nothing to hand over: %w", admin.ErrInvalid)
	}
	o.ctl.update(func(f *facts) { f.maintained = on })
	o.persist()
	o.ctl.log.Info("maintenance mode changed by operator", "on", on)
	return nil
}

// SetServerAdmin implements admin.Controller.
func (o *operatorAPI) SetServerAdmin(backend, server, state string) error {
	pools, _ := o.srv.parts()
	p, ok := pools[backend]
	if !ok {
		return fmt.Errorf("no backend %q: %w", backend, admin.ErrNotFound)
	}
	srv, ok := p.Server(server)
	if !ok {
		names := make([]string, 0, len(p.Servers()))
		for _, s := range p.Servers() {
			names = append(names, s.Name())
		}
		slices.Sort(names)
		return fmt.Errorf("backend %q has no server %q (it has %v): %w", backend, server, names, admin.ErrNotFound)
	}
	var st pool.AdminState
	switch state {
	case admin.ActionEnable:
		st = pool.Enabled
	case admin.ActionDisable:
		st = pool.Disabled
	case admin.ActionDrain:
		st = pool.Drain
	default:
		return fmt.Errorf("state %q: want enable, disable or drain: %w", state, admin.ErrInvalid)
	}
	srv.SetAdmin(st)
	o.persist()
	o.ctl.log.Info("server state changed by operator", "backend", backend, "server", server, "state", st.String())
	return nil
}

// rateSample is a frontend's connection total when last looked at.
type rateSample struct {
	at    time.Time
	total int64
	rate  float64
}

// minRateWindow keeps two quick looks from dividing by almost nothing.
const minRateWindow = time.Second

// rate is a frontend's new connections per second between the previous
// look (at least minRateWindow ago) and now; the first look averages
// since start. Sampling on demand costs nothing while nobody looks.
func (o *operatorAPI) rate(name string, total int64, now, started time.Time) float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	prev, ok := o.rates[name]
	if !ok {
		prev = rateSample{at: started}
	}
	dt := now.Sub(prev.at)
	if ok && dt < minRateWindow {
		return prev.rate
	}
	r := 0.0
	if dt > 0 {
		r = float64(total-prev.total) / dt.Seconds()
	}
	o.rates[name] = rateSample{at: now, total: total, rate: r}
	return r
}

// listenError says why a frontend does not listen, "" while it does.
func listenError(f *frontend) string {
	if err := f.f.ListenErr(); err != nil {
		return err.Error()
	}
	return ""
}
