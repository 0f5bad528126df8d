package failbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"halb/test/benchresult"
	"halb/test/lab"
)

// TableShareOptions configure RunTableShare.
type TableShareOptions struct {
	Bins       Bins
	Profile    string        // halb's cluster.profile (default lan)
	Conns      int           // idle connections held through the VIP (default 20 000)
	PerClient  int           // connections per client address (default 4)
	Window     time.Duration // each measuring window (default 30 s)
	WorkDir    string
	ResultsDir string
	Machine    benchresult.Machine
	Out        io.Writer
	Log        *slog.Logger
}

// TableShareResult is the "tableshare" part of a results file: what
// sharing the table of client connections (docs/tickle.md) costs the
// holder and its peer, without connections and with Conns open.
type TableShareResult struct {
	Method  string    `json:"method"`
	At      time.Time `json:"at"`
	Profile string    `json:"profile"`
	Conns   int       `json:"conns"`
	// Requested is the connections asked for; Conns is less when the
	// open-file limit FileLimit (of this process and halb) had no room.
	Requested int    `json:"requested_conns"`
	FileLimit uint64 `json:"file_limit"`
	PerClient int    `json:"conns_per_client_address"`
	// FillSeconds is from the first connection dialled until the peer's
	// copy of the holder's table listed them all.
	FillSeconds float64 `json:"fill_seconds"`
	// Fill is the use over that time: adds sent as deltas while the
	// connections opened.
	Fill    *TableShareWindow   `json:"fill"`
	Windows []*TableShareWindow `json:"windows"`
	// Moves is how often the VIP moved during the run (want 0).
	Moves int `json:"vip_moves"`
}

// TableShareWindow is one measuring window.
type TableShareWindow struct {
	Name       string              `json:"name"`
	Seconds    float64             `json:"seconds"`
	Conns      int                 `json:"conns"`      // held through the VIP
	PeerTable  int                 `json:"peer_table"` // the holder's table as the peer knew it at the end
	LoadAvgEnd string              `json:"loadavg_end"`
	Nodes      map[string]NodeRate `json:"nodes"` // "holder", "peer"
}

// NodeRate is one node's use over a window, per second.
type NodeRate struct {
	Node          string  `json:"node"`
	GossipOutBps  float64 `json:"gossip_out_bytes_per_s"`
	GossipInBps   float64 `json:"gossip_in_bytes_per_s"`
	GossipOutPkts float64 `json:"gossip_out_packets_per_s"`
	CPUPercent    float64 `json:"cpu_percent"` // of one CPU: user + system
}

// fdSpare is the descriptors a process needs besides two per held
// connection: listeners, checks, gossip, logs.
const fdSpare = 2048

// TableShareMethod says how the table sharing is measured.
const TableShareMethod = "one halb lab (2 LB nodes); idle plain TCP connections from the client " +
	"(several per client address, keep-alive off) through VIP:7000 to a server in each control " +
	"plane's namespace that never writes; gossip = IP bytes of TCP and UDP to or from port 7946 " +
	"(memberlist, which also carries the table), counted by nftables in each LB namespace; CPU = " +
	"utime + stime of each halb process from /proc/PID/stat; each window first without " +
	"connections, then with them all open and the peer's copy of the table complete"

// RunTableShare measures the table sharing and merges the result into
// the day's file.
func RunTableShare(ctx context.Context, o TableShareOptions) (*TableShareResult, error) {
	o.defaults()
	// Here: a client and a server socket per connection; in halb two.
	limit, err := lab.RaiseFileLimit(uint64(2*o.Conns + fdSpare))
	if err != nil {
		return nil, err
	}
	requested := o.Conns
	if fit := (int(limit) - fdSpare) / 2; fit < o.Conns {
		if fit < 1000 {
			return nil, fmt.Errorf("tableshare: an open-file limit of %d leaves room for %d connections, want 1000 or more", limit, fit)
		}
		_, _ = fmt.Fprintf(o.Out, "tableshare: the open-file limit is %d (raising it needs CAP_SYS_RESOURCE): holding %d connections, not %d\n", limit, fit, o.Conns)
		o.Conns = fit
	}
	l := lab.New(lab.Options{
		HalbBin: o.Bins.Halb, LabBin: o.Bins.Lab, WorkDir: filepath.Join(o.WorkDir, "tableshare"), StartHalb: true,
		Profile: o.Profile, Policy: "preempt", PreemptDelay: preemptDelay, IdleFrontend: true,
	}, o.Log)
	defer func() {
		if err := l.Close(); err != nil {
			_, _ = fmt.Fprintf(o.Out, "tableshare: tear down lab: %v\n", err)
		}
	}()
	if err := l.Up(ctx); err != nil {
		return nil, fmt.Errorf("tableshare: build lab: %w", err)
	}
	r := &runner{l: l, sys: halbSystem{l}}
	if err := r.settled(ctx, preferred); err != nil {
		return nil, fmt.Errorf("tableshare: %w", err)
	}
	if err := l.CountGossip(ctx); err != nil {
		return nil, err
	}
	res := &TableShareResult{Method: TableShareMethod, At: time.Now(), Profile: o.Profile, Conns: o.Conns, Requested: requested,
		FileLimit: limit, PerClient: o.PerClient}
	_, _ = fmt.Fprintf(o.Out, "tableshare: %s without connections\n", o.Window)
	w, err := measureShare(ctx, l, "no connections", o.Window, 0)
	if err != nil {
		return nil, err
	}
	res.Windows = append(res.Windows, w)

	_, _ = fmt.Fprintf(o.Out, "tableshare: opening %d idle connections (%d per client address)\n", o.Conns, o.PerClient)
	before, err := readUsage(ctx, l)
	if err != nil {
		return nil, err
	}
	held, err := l.HoldIdle(ctx, o.Conns, o.PerClient)
	if err != nil {
		return nil, err
	}
	defer held.Close()
	peerTable, err := waitPeerTable(ctx, l, o.Conns, 3*time.Minute)
	if err != nil {
		return nil, err
	}
	after, err := readUsage(ctx, l)
	if err != nil {
		return nil, err
	}
	res.Fill = rates("fill", before, after, o.Conns, peerTable)
	res.FillSeconds = res.Fill.Seconds
	_, _ = fmt.Fprintf(o.Out, "tableshare: the peer lists %d connections after %.1f s; %s with them open\n", peerTable, res.FillSeconds, o.Window)

	w, err = measureShare(ctx, l, fmt.Sprintf("%d connections", o.Conns), o.Window, held.Len())
	if err != nil {
		return nil, err
	}
	res.Windows = append(res.Windows, w)
	if res.Moves, err = standbyTakeovers(ctx, l); err != nil {
		return res, err
	}
	path, err := benchresult.Merge(o.ResultsDir, "tableshare", o.Machine, res, time.Now())
	if err != nil {
		return res, err
	}
	if err := WriteMarkdown(o.ResultsDir, time.Now()); err != nil {
		return res, err
	}
	_, _ = fmt.Fprintf(o.Out, "tableshare: results merged into %s\n\n%s\n", path, res.Markdown())
	if res.Moves > 0 {
		return res, fmt.Errorf("tableshare: the VIP moved %d time(s) with nothing failing", res.Moves)
	}
	return res, nil
}

func (o *TableShareOptions) defaults() {
	if o.Profile == "" {
		o.Profile = "lan"
	}
	if o.Conns <= 0 {
		o.Conns = 20000
	}
	if o.PerClient <= 0 {
		o.PerClient = 4
	}
	if o.Window <= 0 {
		o.Window = 30 * time.Second
	}
}

// usage is a reading of both nodes.
type usage map[string]lab.NodeUsage

func readUsage(ctx context.Context, l *lab.Lab) (usage, error) {
	u := usage{}
	for _, n := range []string{preferred, standby} {
		r, err := l.NodeUsage(ctx, n)
		if err != nil {
			return nil, err
		}
		u[n] = r
	}
	return u, nil
}

// measureShare reads both nodes' use over d.
func measureShare(ctx context.Context, l *lab.Lab, name string, d time.Duration, conns int) (*TableShareWindow, error) {
	before, err := readUsage(ctx, l)
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(d):
	}
	after, err := readUsage(ctx, l)
	if err != nil {
		return nil, err
	}
	table, err := peerTableSize(ctx, l)
	if err != nil {
		return nil, err
	}
	return rates(name, before, after, conns, table), nil
}

// rates turns two readings into a window.
func rates(name string, before, after usage, conns, peerTable int) *TableShareWindow {
	w := &TableShareWindow{Name: name, Conns: conns, PeerTable: peerTable, LoadAvgEnd: loadAvg(), Nodes: map[string]NodeRate{}}
	for role, n := range map[string]string{"holder": preferred, "peer": standby} {
		d := after[n].Sub(before[n])
		secs := after[n].At.Sub(before[n].At).Seconds()
		w.Seconds = round1(secs)
		w.Nodes[role] = NodeRate{
			Node:          n,
			GossipOutBps:  round1(float64(d.GossipOutBytes) / secs),
			GossipInBps:   round1(float64(d.GossipInBytes) / secs),
			GossipOutPkts: round1(float64(d.GossipOutPkts) / secs),
			CPUPercent:    round1(100 * d.CPU.Seconds() / secs),
		}
	}
	return w
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// peerTableSize is the holder's table of the VIP as the standby knows it.
func peerTableSize(ctx context.Context, l *lab.Lab) (int, error) {
	st, err := l.Status(ctx, standby)
	if err != nil {
		return 0, fmt.Errorf("status of %s: %w", standby, err)
	}
	for _, v := range st.VIPs {
		if v.Address == lab.VIP().String() {
			return v.ConnTable, nil
		}
	}
	return 0, fmt.Errorf("status of %s lists no VIP %s", standby, lab.VIP())
}

// standbyTakeovers is 1 if the standby ever took the VIP over or the
// preferred node does not hold it now, else 0.
func standbyTakeovers(ctx context.Context, l *lab.Lab) (int, error) {
	st, err := l.Status(ctx, standby)
	if err != nil {
		return 0, fmt.Errorf("status of %s: %w", standby, err)
	}
	for _, v := range st.VIPs {
		if !v.LastTakeover.IsZero() || v.HeldHere {
			return 1, nil
		}
	}
	h, err := l.Holder(ctx)
	if err != nil {
		return 0, err
	}
	if len(h) != 1 || h[0] != preferred {
		return 1, nil
	}
	return 0, nil
}

// waitPeerTable waits until the standby's copy of the holder's table
// lists at least n connections.
func waitPeerTable(ctx context.Context, l *lab.Lab, n int, bound time.Duration) (int, error) {
	deadline := time.Now().Add(bound)
	got := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var err error
		if got, err = peerTableSize(ctx, l); err == nil && got >= n {
			return got, nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return got, fmt.Errorf("tableshare: the peer lists %d of %d connections after %s", got, n, bound)
}

// Markdown renders the table sharing as a markdown table.
func (r *TableShareResult) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "halb profile %s, %d idle connections, %d per client address. The peer's copy of the table was complete %.1f s after the first dial.\n\n",
		r.Profile, r.Conns, r.PerClient, r.FillSeconds)
	if r.Requested > r.Conns {
		fmt.Fprintf(&b, "%d connections were asked for; the open-file limit of %d (halb needs two descriptors per connection, and raising the hard limit needs CAP_SYS_RESOURCE) left room for %d.\n\n",
			r.Requested, r.FileLimit, r.Conns)
	}
	b.WriteString("| window | secs | peer's table | holder gossip out B/s | holder gossip in B/s | holder CPU % | peer gossip out B/s | peer gossip in B/s | peer CPU % | load avg at end |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	ws := append([]*TableShareWindow(nil), r.Windows...)
	if r.Fill != nil {
		ws = append(ws[:1:1], append([]*TableShareWindow{r.Fill}, ws[1:]...)...)
	}
	for _, w := range ws {
		h, p := w.Nodes["holder"], w.Nodes["peer"]
		fmt.Fprintf(&b, "| %s | %.1f | %d | %.0f | %.0f | %.1f | %.0f | %.0f | %.1f | %s |\n", w.Name, w.Seconds, w.PeerTable,
			h.GossipOutBps, h.GossipInBps, h.CPUPercent, p.GossipOutBps, p.GossipInBps, p.CPUPercent, w.LoadAvgEnd)
	}
	fmt.Fprintf(&b, "\nVIP moves during the run: **%d**.\n", r.Moves)
	return b.String()
}
