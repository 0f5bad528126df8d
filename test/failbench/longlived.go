package failbench

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"halb/test/fakecp"
	"halb/test/lab"
)

// Long-lived connection scenarios (issue 17): idle connections through
// the VIP, no keep-alive, when the holder dies, is cut off, is stopped
// or hands the VIP over. The longlived-* ones hold TLS connections to the
// Kubernetes API, the longlived-echo-* ones plain TCP connections to an
// echo server (the issue's own hold/echo client: no TLS handshake in the
// reconnection).
const (
	LongKill      = "longlived-kill"
	LongLinkDown  = "longlived-linkdown"
	LongStop      = "longlived-stop"
	LongDrill     = "longlived-drill"
	EchoKill      = "longlived-echo-kill"
	EchoLinkDown  = "longlived-echo-linkdown"
	EchoStop      = "longlived-echo-stop"
	EchoDrill     = "longlived-echo-drill"
	echoPrefix    = "longlived-echo-"
	longLivedPref = "longlived-"
)

// longLivedScenarios lists the long-lived scenarios in run order.
func longLivedScenarios() []string {
	return []string{LongKill, LongLinkDown, LongStop, LongDrill, EchoKill, EchoLinkDown, EchoStop, EchoDrill}
}

// Bounds of a long-lived repetition.
const (
	// longLivedConns is how many idle connections the client holds.
	longLivedConns = 1000
	// longLivedBound is how long after the cut a connection may stay open
	// before it counts as never told: a client without keep-alive waits
	// forever, so the number is the bound, not a measurement.
	longLivedBound = 15 * time.Second
	// longLivedReps caps the repetitions: one takes about as long as the
	// bound for a system that does not tell its clients.
	longLivedReps = 5
	// tickleLogWait is how long a repetition waits for the new holder's
	// log line of its tickles, written after the last round (600 ms).
	tickleLogWait = 2 * time.Second
)

func isLongLived(sc string) bool { return strings.HasPrefix(sc, longLivedPref) }

// longLivedScenario is a long-lived variant of a failure: the same
// injection, measured on held connections.
func (r *runner) longLivedScenario(name string) (scenario, error) {
	echo := strings.HasPrefix(name, echoPrefix)
	mode := strings.TrimPrefix(strings.TrimPrefix(name, echoPrefix), longLivedPref)
	var sc scenario
	var err error
	switch mode {
	case Kill, LinkDown:
		// After kill -9 the host's kernel stays up and closes the
		// process's sockets itself; after link down nothing tells the
		// clients but the new holder.
		sc, err = r.scenario(mode)
	case "drill":
		// halb drill (keepalived: SIGTERM, HAProxy keeps running). The
		// move is when the standby has the VIP: with flow hand-off the
		// old holder keeps the address until its connections are gone.
		sc, err = r.scenario(Planned)
		sc.done = holds(standby)
	case "stop":
		sc = gracefulStop()
	default:
		return scenario{}, fmt.Errorf("unknown scenario %q: want one of %v", name, AllScenarios())
	}
	sc.longLived, sc.echo = true, echo
	return sc, err
}

// gracefulStop stops the holder's whole stack as a shutdown would
// (halb: SIGTERM; keepalived and then HAProxy: SIGTERM) and starts it
// again as the repair.
func gracefulStop() scenario {
	var wait func() error
	return scenario{
		inject: func(_ context.Context, r *runner) error {
			wait = r.sys.stop(preferred)
			return nil
		},
		to: standby, done: holds(standby),
		repair: func(ctx context.Context, r *runner) error {
			if wait != nil {
				if err := wait(); err != nil {
					return fmt.Errorf("graceful stop of %s: %w", preferred, err)
				}
			}
			return restart(preferred)(ctx, r)
		},
	}
}

// holds is a WaitHolder predicate: node has the VIP, whoever else still does.
func holds(node string) func([]string) bool {
	return func(h []string) bool {
		for _, x := range h {
			if x == node {
				return true
			}
		}
		return false
	}
}

// longLivedRep is what one long-lived repetition measured, per connection
// from the cut: when its read failed and when a new connection answered,
// and where the time between went.
type longLivedRep struct {
	Conns        int     `json:"conns"`
	Workers      int     `json:"reconnect_workers"` // reconnections in flight at most; 0: all at once
	StillOpen    int     `json:"still_open"`        // not failed within the bound
	NotRecovered int     `json:"not_recovered"`     // failed, but no new connection worked within the bound
	Resets       int     `json:"resets"`            // failed with a reset, the rest with a clean close (EOF)
	FailedMS     Summary `json:"failed_after_cut_ms"`
	RecoveredMS  Summary `json:"recovered_after_cut_ms"`
	// FreshMS is when, after the cut, began the first brand-new
	// connection from the client that worked (the failover time for new
	// connections, by a probe starting one every 10 ms); the bound if none did.
	FreshMS float64 `json:"fresh_works_after_cut_ms"`
	// Steps of the recovered connections, each a duration: waiting for a
	// dial slot before the first attempt; from the failure to the start
	// of the attempt that worked (the slot, attempts refused before the
	// VIP moved, their 100 ms pauses); that attempt's TCP connect, TLS
	// handshake and request; the attempts made.
	QueueMS   Summary `json:"queue_ms"`
	RetryMS   Summary `json:"retry_ms"`
	ConnectMS Summary `json:"connect_ms"`
	TLSMS     Summary `json:"tls_ms"`
	RequestMS Summary `json:"request_ms"`
	Attempts  Summary `json:"attempts"`
	// CPU is what each party spent from the cut until every connection was
	// replaced (or the bound).
	CPU *cpuUse `json:"cpu,omitempty"`
	// Tickle is halb's log line of the takeover's tickles, abridged.
	Tickle string `json:"tickle,omitempty"`
}

// cpuUse is CPU time in ms over a wall-clock window: the client (this
// process: the held connections and their reconnections), the new
// holder's proxy (halb, or HAProxy) and the three fake control planes.
type cpuUse struct {
	WallMS    float64 `json:"wall_ms"`
	ClientMS  float64 `json:"client_ms"`
	ProxyMS   float64 `json:"proxy_ms"`
	ServersMS float64 `json:"servers_ms"`
}

// longLivedSummary sums the repetitions up: the per-repetition medians
// and maxima, each summarised over the repetitions.
type longLivedSummary struct {
	Workers      int     `json:"reconnect_workers"` // 0: every connection at once
	Conns        int     `json:"conns"`
	StillOpen    int     `json:"still_open"` // over all repetitions
	NotRecovered int     `json:"not_recovered"`
	Resets       int     `json:"resets"`
	FailedMedian Summary `json:"failed_median_ms"`
	FailedMax    Summary `json:"failed_max_ms"`
	RecoveredMed Summary `json:"recovered_median_ms"`
	RecoveredMax Summary `json:"recovered_max_ms"`
	// Fresh is FreshMS over the repetitions; OverFresh each repetition's
	// median recovery less its FreshMS: the issue's "median ≤ failover
	// time + 100 ms", paired within the repetition.
	Fresh       Summary `json:"fresh_works_after_cut_ms"`
	OverFresh   Summary `json:"recovered_median_over_fresh_ms"`
	QueueMed    Summary `json:"queue_median_ms"`
	RetryMed    Summary `json:"retry_median_ms"`
	ConnectMed  Summary `json:"connect_median_ms"`
	TLSMed      Summary `json:"tls_median_ms"`
	RequestMed  Summary `json:"request_median_ms"`
	AttemptsMax Summary `json:"attempts_max"`
	// CPU is the repetitions' CPU use added up.
	CPU     cpuUse  `json:"cpu"`
	BoundMS float64 `json:"bound_ms"`
}

func summarizeLongLived(runs []rep) *longLivedSummary {
	var s longLivedSummary
	var fmed, fmax, rmed, rmax, qmed, tmed, cmed, hmed, qumed, amax, fresh, over []float64
	for _, r := range runs {
		if r.LongLived == nil {
			continue
		}
		l := r.LongLived
		s.Conns, s.Workers = l.Conns, l.Workers
		s.StillOpen += l.StillOpen
		s.NotRecovered += l.NotRecovered
		s.Resets += l.Resets
		fmed, fmax = append(fmed, l.FailedMS.Median), append(fmax, l.FailedMS.Max)
		rmed, rmax = append(rmed, l.RecoveredMS.Median), append(rmax, l.RecoveredMS.Max)
		fresh, over = append(fresh, l.FreshMS), append(over, l.RecoveredMS.Median-l.FreshMS)
		qmed, tmed = append(qmed, l.QueueMS.Median), append(tmed, l.RetryMS.Median)
		cmed, hmed = append(cmed, l.ConnectMS.Median), append(hmed, l.TLSMS.Median)
		qumed, amax = append(qumed, l.RequestMS.Median), append(amax, l.Attempts.Max)
		if c := l.CPU; c != nil {
			s.CPU.WallMS += c.WallMS
			s.CPU.ClientMS += c.ClientMS
			s.CPU.ProxyMS += c.ProxyMS
			s.CPU.ServersMS += c.ServersMS
		}
	}
	if len(fmed) == 0 {
		return nil
	}
	s.FailedMedian, s.FailedMax = summarize(fmed), summarize(fmax)
	s.RecoveredMed, s.RecoveredMax = summarize(rmed), summarize(rmax)
	s.Fresh, s.OverFresh = summarize(fresh), summarize(over)
	s.QueueMed, s.RetryMed = summarize(qmed), summarize(tmed)
	s.ConnectMed, s.TLSMed = summarize(cmed), summarize(hmed)
	s.RequestMed, s.AttemptsMax = summarize(qumed), summarize(amax)
	s.BoundMS = ms(longLivedBound)
	return &s
}

// longLivedOutcome turns what happened to each connection into a
// repetition's numbers; a connection still open, or never replaced, at
// the bound counts at the bound.
func longLivedOutcome(t0 time.Time, res []lab.LongLivedConn, bound time.Duration) *longLivedRep {
	out := &longLivedRep{Conns: len(res)}
	var failed, recovered, queue, retry, connect, hs, req, attempts []float64
	for _, c := range res {
		f, r := bound, bound
		switch {
		case c.Failed.IsZero():
			out.StillOpen++
		case c.Recovered.IsZero():
			out.NotRecovered++
			f = c.Failed.Sub(t0)
		default:
			f, r = c.Failed.Sub(t0), c.Recovered.Sub(t0)
			queue = append(queue, ms(c.FirstTry.Sub(c.Failed)))
			retry = append(retry, ms(c.Try.Sub(c.Failed)))
			connect = append(connect, ms(c.Connected.Sub(c.Try)))
			hs = append(hs, ms(c.Handshook.Sub(c.Connected)))
			req = append(req, ms(c.Recovered.Sub(c.Handshook)))
			attempts = append(attempts, float64(c.Attempts))
		}
		if !c.Failed.IsZero() && c.Reset() {
			out.Resets++
		}
		failed, recovered = append(failed, ms(f)), append(recovered, ms(r))
	}
	out.FailedMS, out.RecoveredMS = summarize(failed), summarize(recovered)
	out.QueueMS, out.RetryMS, out.ConnectMS = summarize(queue), summarize(retry), summarize(connect)
	out.TLSMS, out.RequestMS, out.Attempts = summarize(hs), summarize(req), summarize(attempts)
	return out
}

// onceLongLived runs one long-lived repetition of sc: the client holds
// the connections through the preferred node, the failure is injected,
// and each connection is watched until it failed and a new one works.
func (r *runner) onceLongLived(ctx context.Context, sc scenario) (rep, error) {
	if err := r.settled(ctx, preferred); err != nil {
		return rep{}, fmt.Errorf("before the repetition: %w", err)
	}
	held, err := r.holdLongLived(ctx, sc.echo)
	if err != nil {
		return rep{}, err
	}
	defer held.Close()
	// halb's standby must have the holder's table: it is shared every
	// 200 ms; give it a few rounds (keepalived has nothing to wait for).
	time.Sleep(time.Second)
	delay := time.Duration(r.rnd.Int64N(int64(r.window)))
	time.Sleep(delay)
	logFrom := len(r.l.Log(standby))
	cpu0 := r.cpuNow()
	// The fresh connections go to the echo frontend in the TLS scenarios
	// too: they time the path, and TLS handshakes every 10 ms would
	// compete with the reconnections for the CPU.
	fresh := startFresh(ctx, r.l, netip.AddrPortFrom(lab.VIP(), lab.IdlePort))
	held.WatchWith(ctx, longLivedBound, r.workers)
	t0 := time.Now()
	if err := sc.inject(ctx, r); err != nil {
		held.Close()
		held.Wait()
		fresh.stop()
		return rep{}, fmt.Errorf("inject: %w", err)
	}
	injected := time.Now()
	_, err = r.l.WaitHolder(ctx, takeoverBound, sc.done)
	took := time.Since(t0)
	res := held.Wait()
	cpu := r.cpuNow().since(cpu0, time.Since(t0))
	fresh.stop()
	held.Close() // the new connections too, before the repair moves the VIP again
	if err != nil {
		return rep{}, fmt.Errorf("after %s: %w", took.Round(time.Millisecond), err)
	}
	out := rep{Takeover: took, Delay: delay, Attempts: len(res), LongLived: longLivedOutcome(t0, res, longLivedBound)}
	out.LongLived.CPU, out.LongLived.Workers = cpu, r.workers
	if d, ok := fresh.workingAfter(t0, injected); ok {
		out.LongLived.FreshMS = ms(d)
	} else {
		out.LongLived.FreshMS = ms(longLivedBound)
	}
	out.LongLived.Tickle = r.waitTickleLine(t0, logFrom)
	out.Failed = out.LongLived.StillOpen
	if sc.repair != nil {
		if err := sc.repair(ctx, r); err != nil {
			return out, fmt.Errorf("repair: %w", err)
		}
	}
	return out, nil
}

// holdLongLived opens the repetition's connections through the VIP.
func (r *runner) holdLongLived(ctx context.Context, echo bool) (*lab.LongLived, error) {
	if echo {
		return r.l.HoldEcho(ctx, netip.AddrPortFrom(lab.VIP(), lab.IdlePort), longLivedConns)
	}
	cfg, err := r.l.ClientTLS(fakecp.KubeAdmin)
	if err != nil {
		return nil, err
	}
	cfg.ServerName = lab.VIP().String()
	cfg.NextProtos = []string{"http/1.1"}
	return r.l.HoldLongLived(ctx, vipAPI(), cfg, longLivedConns)
}

// cpuSample is the CPU time so far of the client, the standby's proxy and
// the control planes; a process that is not running counts nothing.
type cpuSample struct{ client, proxy, servers time.Duration }

func (r *runner) cpuNow() cpuSample {
	var s cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// halb runs as the node's name, HAProxy beside keepalived as node-haproxy.
	for _, name := range []string{standby, standby + "-haproxy"} {
		if d, err := r.l.CPU(name); err == nil {
			s.proxy += d
		}
	}
	for _, cp := range r.l.CPNames() {
		if d, err := r.l.CPU(cp); err == nil {
			s.servers += d
		}
	}
	return s
}

func (s cpuSample) since(before cpuSample, wall time.Duration) *cpuUse {
	return &cpuUse{
		WallMS: ms(wall), ClientMS: ms(s.client - before.client),
		ProxyMS: ms(s.proxy - before.proxy), ServersMS: ms(s.servers - before.servers),
	}
}

// waitTickleLine waits up to tickleLogWait after t0 for halb's tickle
// log line on the standby past logFrom; "" for keepalived, or halb
// without tickles.
func (r *runner) waitTickleLine(t0 time.Time, logFrom int) string {
	if !r.l.Running(standby) {
		return "" // not halb: keepalived's processes have other names
	}
	for {
		if log := r.l.Log(standby); len(log) >= logFrom {
			if line := tickleLine(log[logFrom:]); line != "" {
				return line
			}
		}
		if time.Since(t0) > tickleLogWait {
			return ""
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tickleLine abridges halb's log line of a takeover's tickles to its
// counts and duration ("" if log has none).
func tickleLine(log string) string {
	const msg = "the previous holder's connections"
	var line string
	for l := range strings.Lines(log) {
		if strings.Contains(l, msg) && strings.Contains(l, "tickled=") {
			line = l
		}
	}
	var keep []string
	for f := range strings.FieldsSeq(line) {
		for _, k := range []string{"tickled=", "acknowledged=", "already_closed=", "repeats_skipped=", "took=", "answers_dropped="} {
			if strings.HasPrefix(f, k) {
				keep = append(keep, f)
			}
		}
	}
	return strings.Join(keep, " ")
}

// longLivedMarkdown is the tables of the long-lived scenarios: what the
// clients saw, then where the time went.
func (f *FailoverResult) longLivedMarkdown() string {
	var b, steps strings.Builder
	titles := scenarioTitles()
	three := func(s Summary) string { return fmt.Sprintf("%.0f / %.0f / %.0f", s.Min, s.Median, s.Max) }
	f.rows(func(sc, sys string, r *ScenarioResult) {
		l := r.LongLived
		if l == nil {
			return
		}
		if b.Len() == 0 {
			fmt.Fprintf(&b, "\nLong-lived connections: %d idle connections through the VIP from the client, one request answered, TCP keep-alive off: "+
				"TLS to the Kubernetes API (GET /version), or plain TCP to an echo server (\"echo\"); per connection, "+
				"the time from the failure until its read failed and until a new connection answered a request (retried every 100 ms, "+
				"%s); per repetition the median and the maximum, shown as min / median / max over the repetitions. "+
				"A connection not told within %.0f s counts as %.0f s. \"First new connection works\" is the earliest replacement in a "+
				"repetition: when the new path worked for this client. \"Fresh connections work\" is when the first brand-new connection "+
				"that worked began (one started every 10 ms by a separate probe, none waiting for another): the failover time for new connections, "+
				"and \"median over fresh\" each repetition's median recovery less it (the goal: ≤ 100 ms).\n\n",
				l.Conns, workersText(l.Workers), l.BoundMS/1000, l.BoundMS/1000)
			b.WriteString("| scenario | system | reps | failed, median ms | failed, max ms | first new connection works, ms | new connection works, median ms | new connection works, max ms | fresh connections work, ms | median over fresh, ms | never told | reset / closed | VIP moved after, ms (median, polled) | load avg |\n|---|---|---:|---|---|---|---|---|---|---|---:|---|---:|---|\n")
			steps.WriteString("\nWhere the time went, per recovered connection (medians over the connections, median over the repetitions, ms): " +
				"waiting for a dial slot; from the failure to the start of the attempt that worked; that attempt's TCP connect, TLS handshake " +
				"and request; the most attempts one connection needed; CPU seconds spent from the cut until the last connection was replaced, " +
				"added over the repetitions, by the client, the new holder's proxy and the three control planes, against the wall-clock " +
				"seconds (2 vCPUs give 2 CPU seconds a second); halb's tickle log line of the last repetition.\n\n" +
				"| scenario | system | dial slot | to the working attempt | TCP connect | TLS handshake | request | attempts, max | CPU s client / proxy / servers in wall s | tickles |\n|---|---|---:|---:|---:|---:|---:|---:|---|---|\n")
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %d | %d / %d | %.0f | %s |\n", titles[sc], sys, r.Reps,
			three(l.FailedMedian), three(l.FailedMax), three(firstRecovered(r.Runs)), three(l.RecoveredMed), three(l.RecoveredMax),
			three(l.Fresh), three(l.OverFresh), l.StillOpen,
			l.Resets, l.Conns*r.Reps-l.StillOpen-l.Resets, r.TakeoverMS.Median, r.LoadAvg)
		tk := ""
		if n := len(r.Runs); n > 0 && r.Runs[n-1].LongLived != nil {
			tk = r.Runs[n-1].LongLived.Tickle
		}
		c := l.CPU
		fmt.Fprintf(&steps, "| %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f / %.1f / %.1f in %.1f | %s |\n", titles[sc], sys,
			l.QueueMed.Median, l.RetryMed.Median, l.ConnectMed.Median, l.TLSMed.Median, l.RequestMed.Median, l.AttemptsMax.Max,
			c.ClientMS/1000, c.ProxyMS/1000, c.ServersMS/1000, c.WallMS/1000, tk)
	})
	return b.String() + steps.String()
}

// firstRecovered is, over the repetitions, when the first of their
// connections was replaced: the client's own view of when the new path
// worked, which the polled "VIP moved" only approximates on a busy host.
func firstRecovered(runs []rep) Summary {
	var xs []float64
	for _, r := range runs {
		if r.LongLived != nil {
			xs = append(xs, r.LongLived.RecoveredMS.Min)
		}
	}
	return summarize(xs)
}

func workersText(n int) string {
	if n <= 0 {
		return "every failed connection reconnecting at once"
	}
	return fmt.Sprintf("at most %d in flight", n)
}

// longLivedRepsFor caps the repetitions of a long-lived scenario.
func longLivedRepsFor(sc string, reps int) int {
	if isLongLived(sc) {
		return min(reps, longLivedReps)
	}
	return reps
}
