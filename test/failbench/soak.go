package failbench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"halb/internal/probe"
	"halb/test/benchresult"
	"halb/test/lab"
)

// SoakOptions configure a soak: halb labs left alone, then loaded, while
// every VIP move is recorded.
type SoakOptions struct {
	Bins       Bins
	Systems    []string      // systems to soak side by side (default halb-lan, halb-fast, keepalived-tuned)
	Idle       time.Duration // phase with no traffic
	Stress     time.Duration // phase with stress-ng and proxy load
	CPUs       int           // stress-ng --cpu workers (default 2)
	LoadProbes int           // concurrent new-connection probes through each VIP (default 2)
	// Held is how many idle connections each halb lab holds through its
	// VIP all along, so its table of client connections is shared
	// (docs/tickle.md) while it is soaked.
	Held       int
	Quick      bool
	WorkDir    string
	ResultsDir string
	Machine    benchresult.Machine
	Out        io.Writer
	Log        *slog.Logger
}

// SoakResult is the "soak" part of a results file.
type SoakResult struct {
	Method         string                 `json:"method"`
	At             time.Time              `json:"at"`
	Quick          bool                   `json:"quick"`
	Stress         string                 `json:"stress"`
	Systems        map[string]*SoakSystem `json:"systems"`
	FalseFailovers int                    `json:"false_failovers"` // takeovers in all phases and systems
	Pass           bool                   `json:"pass"`            // the VIP never moved
}

// SoakSystem is one soaked lab.
type SoakSystem struct {
	Title  string       `json:"title"`
	Phases []*SoakPhase `json:"phases"`
	// Held is how many idle connections were held through the VIP, and
	// PeerTable how many of them the standby's copy of the holder's
	// table listed at the end (halb).
	Held      int `json:"held_conns,omitempty"`
	PeerTable int `json:"peer_table,omitempty"`
}

// SoakPhase is what one phase saw in one lab.
type SoakPhase struct {
	Name       string  `json:"name"`
	Seconds    float64 `json:"seconds"`
	LoadAvgEnd string  `json:"loadavg_end"`
	// FalseFailovers counts times a node other than the holder at the
	// start added the VIP: with no failure, each is a false failover.
	FalseFailovers int `json:"false_failovers"`
	// VIPChanges counts changes of the set of LB hosts with the VIP in
	// their kernel, from `ip monitor address` in each LB namespace (a
	// false failover and the move back are about four).
	VIPChanges int    `json:"vip_changes"`
	Moves      []Move `json:"moves,omitempty"`
	// MemberDown counts times a node's admin API showed a peer not alive
	// (polled every 250 ms): a suspicion that may not have moved the VIP.
	MemberDown int `json:"member_down_seen"`
	AdminPolls int `json:"admin_polls"`
	// Load: new connections through the VIP during the phase.
	LoadAttempts     int            `json:"load_attempts,omitempty"`
	LoadFailed       int            `json:"load_failed,omitempty"`
	LoadLongestGapMS float64        `json:"load_longest_gap_ms,omitempty"`
	LoadErrors       map[string]int `json:"load_errors,omitempty"`
}

// Move is one change of VIP holders.
type Move struct {
	At      time.Time `json:"at"`
	Holders []string  `json:"holders"`
}

// SoakMethod says how the soak is measured; it goes into the results.
const SoakMethod = "one lab per system, side by side, left idle, then with stress-ng " +
	"--cpu N in the root namespace and new connections through each VIP; every VIP add/remove " +
	"in the LB namespaces is seen by `ip monitor address`, peers' liveness polled on the admin " +
	"socket every 250 ms (halb); any takeover by a node that did not hold the VIP is a false failover"

// soakLab is one lab under soak with its watchers.
type soakLab struct {
	name  string
	title string
	l     *lab.Lab
	mu    sync.Mutex
	has   map[string]bool // LB -> VIP in its kernel
	phase *SoakPhase
	seen  map[string]bool // "lb1>lb2" -> last poll saw lb2 not alive from lb1
	// initial is the holder when watching began: the VIP belongs there.
	initial string
	admin   bool // the nodes have halb's admin socket to poll
	held    *lab.IdleConns
}

// RunSoak runs the soak and merges its result into the day's file. It
// returns an error when a VIP moved.
func RunSoak(ctx context.Context, o SoakOptions) (*SoakResult, error) {
	o.defaults()
	var labs []*soakLab
	defer func() {
		for _, s := range labs {
			if s.held != nil {
				s.held.Close()
			}
			if err := s.l.Close(); err != nil {
				_, _ = fmt.Fprintf(o.Out, "soak %s: tear down lab: %v\n", s.name, err)
			}
		}
	}()
	if err := buildSoakLabs(ctx, o, &labs); err != nil {
		return nil, err
	}

	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopWatch(); wg.Wait() }()
	for _, s := range labs {
		if err := s.watch(wctx, &wg); err != nil {
			return nil, err
		}
	}

	res := &SoakResult{Method: SoakMethod, At: time.Now(), Quick: o.Quick,
		Stress:  fmt.Sprintf("stress-ng --cpu %d in the root namespace + %d probe(s) per VIP opening a TLS connection every 10 ms", o.CPUs, o.LoadProbes),
		Systems: map[string]*SoakSystem{}}
	for _, s := range labs {
		res.Systems[s.name] = &SoakSystem{Title: s.title}
		if s.held != nil {
			res.Systems[s.name].Held = s.held.Len()
		}
	}
	changes, err := runPhases(ctx, o, labs, res)
	if err != nil {
		return nil, err
	}
	for _, s := range labs {
		if s.held != nil {
			// What the standby lists at the end: the table was shared
			// all along (an error leaves 0, which the table shows).
			res.Systems[s.name].PeerTable, _ = peerTableSize(ctx, s.l)
		}
	}
	stopWatch()
	wg.Wait()
	return res, finishSoak(o, res, changes)
}

// defaults fills in the systems, CPU stressors and load probes not set.
func (o *SoakOptions) defaults() {
	if len(o.Systems) == 0 {
		o.Systems = []string{HalbLAN, HalbFast, KeepalivedTuned}
	}
	if o.CPUs <= 0 {
		o.CPUs = 2
	}
	if o.LoadProbes <= 0 {
		o.LoadProbes = 2
	}
}

// buildSoakLabs builds a settled lab per system, appending each to labs
// as soon as it exists so the caller tears down even a half-built one.
func buildSoakLabs(ctx context.Context, o SoakOptions, labs *[]*soakLab) error {
	all := specs()
	if o.Held > 0 {
		// Here: a client and a server socket per connection; in halb two.
		need := uint64(2*o.Held*len(o.Systems) + fdSpare)
		if limit, err := lab.RaiseFileLimit(need); err != nil {
			return err
		} else if limit < need {
			return fmt.Errorf("soak: holding %d connections in each of %d labs needs %d open files, the limit is %d (raising it needs CAP_SYS_RESOURCE): lower --soak-held", o.Held, len(o.Systems), need, limit)
		}
	}
	for _, name := range o.Systems {
		spec, ok := all[name]
		if !ok {
			return fmt.Errorf("soak: unknown system %q: want some of %v", name, AllSystems())
		}
		build := spec.build
		hold := o.Held > 0 && spec.profile != ""
		if hold {
			build = halbBuilderWith(spec.profile, func(lo *lab.Options) { lo.IdleFrontend = true })
		}
		l, sys, err := build(ctx, o.Bins, filepath.Join(o.WorkDir, "soak-"+name), o.Log)
		s := &soakLab{name: name, title: spec.title, l: l, has: map[string]bool{}, seen: map[string]bool{},
			admin: strings.HasPrefix(name, "halb-")}
		*labs = append(*labs, s)
		if err != nil {
			return fmt.Errorf("soak %s: build lab: %w", name, err)
		}
		r := &runner{l: l, sys: sys}
		if err := r.settled(ctx, preferred); err != nil {
			return fmt.Errorf("soak %s: %w", name, err)
		}
		if hold {
			if s.held, err = l.HoldIdle(ctx, o.Held, 4); err != nil {
				return fmt.Errorf("soak %s: %w", name, err)
			}
			if _, err := waitPeerTable(ctx, l, o.Held, time.Minute); err != nil {
				return fmt.Errorf("soak %s: %w", name, err)
			}
		}
	}
	return nil
}

// runPhases runs the idle and the stress phase, recording each system's
// phase in res, and returns the number of VIP changes seen.
func runPhases(ctx context.Context, o SoakOptions, labs []*soakLab, res *SoakResult) (int, error) {
	changes := 0
	for _, ph := range []struct {
		name   string
		d      time.Duration
		loaded bool
	}{{"idle", o.Idle, false}, {"stress", o.Stress, true}} {
		if ctx.Err() != nil {
			break
		}
		_, _ = fmt.Fprintf(o.Out, "soak: %s for %s\n", ph.name, ph.d)
		for _, s := range labs {
			p := &SoakPhase{Name: ph.name}
			res.Systems[s.name].Phases = append(res.Systems[s.name].Phases, p)
			s.mu.Lock()
			s.phase = p
			s.mu.Unlock()
		}
		start := time.Now()
		if err := runPhase(ctx, o, labs, ph.d, ph.loaded); err != nil {
			return changes, err
		}
		for _, s := range labs {
			changes += s.endPhase(o.Out, res, start)
		}
	}
	if err := ctx.Err(); err != nil {
		return changes, fmt.Errorf("soak interrupted: %w", err)
	}
	return changes, nil
}

// endPhase closes s's current phase, adds its false failovers to res,
// prints a line on it and returns its VIP changes.
func (s *soakLab) endPhase(out io.Writer, res *SoakResult, start time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase.Seconds = time.Since(start).Round(time.Second).Seconds()
	s.phase.LoadAvgEnd = loadAvg()
	res.FalseFailovers += s.phase.FalseFailovers
	_, _ = fmt.Fprintf(out, "soak %s %s: %d false failover(s), %d VIP change(s), %d peer-down sighting(s) in %d polls, load %d connections %d failed\n",
		s.name, s.phase.Name, s.phase.FalseFailovers, s.phase.VIPChanges, s.phase.MemberDown, s.phase.AdminPolls, s.phase.LoadAttempts, s.phase.LoadFailed)
	return s.phase.VIPChanges
}

// finishSoak judges the soak, merges res into the day's results and
// prints them.
func finishSoak(o SoakOptions, res *SoakResult, changes int) error {
	res.Pass = res.FalseFailovers == 0 && changes == 0
	now := time.Now()
	path, err := benchresult.Merge(o.ResultsDir, "soak", o.Machine, res, now)
	if err != nil {
		return err
	}
	if err := WriteMarkdown(o.ResultsDir, now); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(o.Out, "soak: results merged into %s\n\n", path)
	res.WriteTable(o.Out)
	if !res.Pass {
		return fmt.Errorf("soak: %d false failover(s) and %d VIP change(s), want 0", res.FalseFailovers, changes)
	}
	return nil
}

// runPhase waits d, with stress and load when loaded.
func runPhase(ctx context.Context, o SoakOptions, labs []*soakLab, d time.Duration, loaded bool) error {
	if !loaded {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		return nil
	}
	stress := exec.Command("stress-ng", "--cpu", fmt.Sprint(o.CPUs), "--timeout", fmt.Sprintf("%ds", int(d.Seconds())+5), "--quiet")
	stress.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stress.Start(); err != nil {
		return fmt.Errorf("start stress-ng (apt-get install stress-ng): %w", err)
	}
	stressDone := make(chan struct{})
	go func() {
		_ = stress.Wait() // killed on purpose below: its exit status says nothing
		close(stressDone)
	}()
	defer func() {
		_ = syscall.Kill(-stress.Process.Pid, syscall.SIGKILL)
		<-stressDone
	}()

	type load struct {
		s  *soakLab
		pr *lab.ProbeRun
	}
	var loads []load
	var errs []error
	for _, s := range labs {
		for range o.LoadProbes {
			pr, err := s.l.StartProbe(ctx, vipAPI(), probe.ModeHTTPS, d)
			if err != nil {
				errs = append(errs, fmt.Errorf("soak %s: start load: %w", s.name, err))
				continue
			}
			loads = append(loads, load{s, pr})
		}
	}
	for _, ld := range loads {
		rep, err := ld.pr.Wait()
		if err != nil {
			errs = append(errs, fmt.Errorf("soak %s: load: %w", ld.s.name, err))
			continue
		}
		ld.s.mu.Lock()
		p := ld.s.phase
		p.LoadAttempts += rep.Attempts
		p.LoadFailed += rep.Failures
		p.LoadLongestGapMS = max(p.LoadLongestGapMS, ms(rep.LongestGap))
		for k, v := range rep.Errors {
			if p.LoadErrors == nil {
				p.LoadErrors = map[string]int{}
			}
			p.LoadErrors[k] += v
		}
		ld.s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// watch starts `ip monitor address` in every LB namespace and a poller of
// the admin sockets; both stop with ctx.
func (s *soakLab) watch(ctx context.Context, wg *sync.WaitGroup) error {
	h, err := s.l.Holder(ctx)
	if err != nil {
		return err
	}
	if len(h) != 1 {
		return fmt.Errorf("soak %s: want one VIP holder to start, have %v", s.name, h)
	}
	s.initial = h[0]
	for _, n := range s.l.LBNames() {
		s.has[n] = slices.Contains(h, n)
	}
	for _, n := range s.l.LBNames() {
		cmd := exec.Command("ip", "-n", s.l.NS(n), "-o", "monitor", "address")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return fmt.Errorf("soak %s: watch %s: %w", s.name, n, err)
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("soak %s: watch %s: %w", s.name, n, err)
		}
		stop := context.AfterFunc(ctx, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stop()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				s.addrEvent(n, sc.Text())
			}
			_ = cmd.Wait()
		}()
	}
	if !s.admin {
		return nil
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.pollAdmin(ctx)
		}
	}()
	return nil
}

// addrEvent applies one `ip -o monitor address` line from node.
func (s *soakLab) addrEvent(node, line string) {
	if !strings.Contains(line, " inet "+lab.VIP().String()+"/") {
		return
	}
	holds := !strings.HasPrefix(line, "Deleted")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.has[node] == holds {
		return // a lifetime refresh, not a move
	}
	s.has[node] = holds
	var h []string
	for _, n := range s.l.LBNames() {
		if s.has[n] {
			h = append(h, n)
		}
	}
	if s.phase != nil {
		if holds && node != s.initial {
			s.phase.FalseFailovers++
		}
		s.phase.VIPChanges++
		s.phase.Moves = append(s.phase.Moves, Move{At: time.Now(), Holders: h})
	}
}

// pollAdmin counts peers a node newly shows as not alive.
func (s *soakLab) pollAdmin(ctx context.Context) {
	for _, n := range s.l.LBNames() {
		st, err := s.l.Status(ctx, n)
		if err != nil {
			continue // a slow answer under stress is not a failover
		}
		s.mu.Lock()
		if s.phase != nil {
			s.phase.AdminPolls++
		}
		for _, m := range st.Members {
			key := n + ">" + m.Name
			down := !m.Alive
			if down && !s.seen[key] && s.phase != nil {
				s.phase.MemberDown++
			}
			s.seen[key] = down
		}
		s.mu.Unlock()
	}
}

// WriteTable prints the soak as text.
func (r *SoakResult) WriteTable(w io.Writer) {
	_, _ = fmt.Fprintf(w, "%-18s %-7s %6s %15s %11s %9s %11s %s\n", "system", "phase", "secs", "false failovers", "VIP changes", "peer-down", "load conns", "load failed")
	for _, sys := range AllSystems() {
		s := r.Systems[sys]
		if s == nil {
			continue
		}
		for _, p := range s.Phases {
			_, _ = fmt.Fprintf(w, "%-18s %-7s %6.0f %15d %11d %9d %11d %d\n", sys, p.Name, p.Seconds, p.FalseFailovers, p.VIPChanges, p.MemberDown, p.LoadAttempts, p.LoadFailed)
		}
	}
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	_, _ = fmt.Fprintf(w, "false failovers: %d (%s)\n", r.FalseFailovers, verdict)
}

// Markdown renders the soak as a markdown table.
func (r *SoakResult) Markdown() string {
	var b strings.Builder
	b.WriteString("| system | phase | duration | false failovers | VIP changes | peer seen down | connections through the VIP | failed | longest gap ms | load avg at end |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, sys := range AllSystems() {
		s := r.Systems[sys]
		if s == nil {
			continue
		}
		for _, p := range s.Phases {
			fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %d | %d | %d | %.0f | %s |\n", sys, p.Name,
				(time.Duration(p.Seconds) * time.Second).String(), p.FalseFailovers, p.VIPChanges, p.MemberDown, p.LoadAttempts, p.LoadFailed, p.LoadLongestGapMS, p.LoadAvgEnd)
		}
	}
	fmt.Fprintf(&b, "\nStress phase: %s. False failovers: **%d**.\n", r.Stress, r.FalseFailovers)
	for _, sys := range AllSystems() {
		if s := r.Systems[sys]; s != nil && s.Held > 0 {
			fmt.Fprintf(&b, "\n%s held %d idle connections through its VIP all along (table of client connections shared; the standby's copy listed %d at the end).\n", sys, s.Held, s.PeerTable)
		}
	}
	return b.String()
}
