package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"halb/internal/admin"
	"halb/internal/cluster"
	"halb/internal/pool"
)

// Snapshot implements admin.Source: everything `halb status` shows.
func (d *Daemon) Snapshot() admin.Snapshot {
	now := time.Now()
	d.mu.Lock()
	maint := d.maintained
	holder, preempt := d.holderView, d.preemptView
	started := d.started
	cfg := d.cfg
	pools, fronts := d.pools, d.frontends
	d.mu.Unlock()
	s := admin.Snapshot{
		Time: now,
		Node: admin.NodeInfo{
			Name:        d.name,
			Version:     d.opts.Version,
			Uptime:      now.Sub(started).Seconds(),
			StartedAt:   started,
			Fingerprint: cfg.Fingerprint,
			Maintenance: maint,
		},
	}
	if s.Node.Name == "" {
		s.Node.Name = d.opts.NodeName
	}
	for _, a := range d.announcers {
		st := a.a.Status()
		addr := a.cfg.Address.Addr().String()
		owner := holder[addr]
		role := admin.VIPRole{VIP: addr, Role: admin.RoleStandby, Why: "elected holder is " + owner}
		switch {
		case st.Held && owner == d.name:
			role = admin.VIPRole{VIP: addr, Role: admin.RoleHolder, Why: "elected: best eligible node"}
		case st.Held:
			role = admin.VIPRole{VIP: addr, Role: admin.RoleReleasing, Why: "waiting for " + owner + " to take it (make before break)"}
		case owner == "":
			role.Why = "no holder elected yet"
		}
		at := preempt[addr]
		if !at.IsZero() && role.Role == admin.RoleStandby {
			role.Why += fmt.Sprintf("; this node takes it over in %s (preempt_delay)", admin.Duration(max(0, at.Sub(now))))
		}
		s.Node.Roles = append(s.Node.Roles, role)
		s.VIPs = append(s.VIPs, admin.VIP{
			Address:     addr,
			Interface:   st.Interface,
			Holder:      owner,
			HeldHere:    st.Held,
			Since:       st.Since,
			LastGARP:    st.LastGARP,
			GARPsSent:   st.GARPsSent,
			Transitions: st.Transitions,
			LastError:   st.LastError,
			PreemptAt:   at,
		})
	}
	if d.cluster != nil {
		present := map[string]bool{}
		for _, m := range d.cluster.Members() {
			s.Members = append(s.Members, member(m))
			present[m.Name] = true
		}
		// Configured nodes this node cannot see are shown, not hidden: a
		// member cut off by a partition must stand out in `halb status`.
		d.mu.Lock()
		for _, n := range cfg.Cluster.Nodes {
			if !present[n.Name] {
				s.Members = append(s.Members, admin.Member{
					Name:      n.Name,
					Address:   netip.AddrPortFrom(n.Address, uint16(cfg.Cluster.Port)).String(),
					Priority:  n.Priority,
					LastHeard: d.lastSeen[n.Name],
				})
			}
		}
		d.mu.Unlock()
		slices.SortFunc(s.Members, func(a, b admin.Member) int { return strings.Compare(a.Name, b.Name) })
	}
	for _, f := range fronts {
		fs := f.f.Stats()
		fc := f.cfg
		s.Frontends = append(s.Frontends, admin.Frontend{
			Name: fc.Name, Bind: fc.Bind.String(), Backend: fc.Backend,
			Current: fs.Current, Total: fs.Total, Rejected: fs.Rejected,
			Rate:    d.rate(fc.Name, fs.Total, now, started),
			BytesIn: fs.BytesIn, BytesOut: fs.BytesOut, MaxConn: fc.MaxConn,
			ListenError: listenError(f),
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
// The state lives in memory only: a restart leaves maintenance.
func (d *Daemon) SetMaintenance(on bool) error {
	if d.cluster == nil {
		return fmt.Errorf("this node has no cluster section: nothing to hand over: %w", admin.ErrInvalid)
	}
	d.mu.Lock()
	d.maintained = on
	d.mu.Unlock()
	d.log.Info("maintenance mode changed by operator", "on", on)
	d.poke()
	return nil
}

// SetServerAdmin implements admin.Controller.
func (d *Daemon) SetServerAdmin(backend, server, state string) error {
	pools, _ := d.parts()
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
	d.log.Info("server state changed by operator", "backend", backend, "server", server, "state", st.String())
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
func (d *Daemon) rate(name string, total int64, now, started time.Time) float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev, ok := d.rates[name]
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
	d.rates[name] = rateSample{at: now, total: total, rate: r}
	return r
}

// listenError says why a frontend does not listen, "" while it does.
func listenError(f *frontend) string {
	if err := f.f.ListenErr(); err != nil {
		return err.Error()
	}
	return ""
}
