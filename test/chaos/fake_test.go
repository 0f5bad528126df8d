package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"halb/internal/admin"
	"halb/internal/probe"
	"halb/test/fakecp"
)

// fakeLab is a lab in memory: it keeps the state each fault changes,
// logs every change, and refuses work on an ended context as commands
// run in the namespace lab would. Its cluster never moves the VIP: lb1
// holds it whenever every node answers.
type fakeLab struct {
	mu      sync.Mutex
	lbs     []string
	holder  string
	killed  map[string]bool
	paused  map[string]bool
	down    map[string]bool
	cut     map[string]bool // "a b"
	netem   map[string]bool
	cps     map[string]fakecp.State
	configs map[string]string
	pids    map[string]int
	nextPID int
	ops     []string // every change made to the lab, in order

	// fail makes the operation of that name fail once.
	fail map[string]error
	// after is called with each operation's name, outside the lock.
	after func(op string)
	// stuck nodes keep the VIP on their interface besides the holder.
	stuck map[string]bool
	// probeErr makes stopping a probe fail.
	probeErr error
}

func newFakeLab(lbs ...string) *fakeLab {
	f := &fakeLab{lbs: lbs, holder: lbs[0], killed: map[string]bool{}, paused: map[string]bool{},
		down: map[string]bool{}, cut: map[string]bool{}, netem: map[string]bool{},
		cps: map[string]fakecp.State{}, configs: map[string]string{}, pids: map[string]int{},
		fail: map[string]error{}, stuck: map[string]bool{}, nextPID: 100}
	for _, n := range lbs {
		f.configs[n] = "frontends: []\n  balance: roundrobin\n  drain: 2s\n"
		f.pids[n] = f.nextPID
		f.nextPID++
	}
	return f
}

var _ Lab = (*fakeLab)(nil)

// op records a change, fails it if asked to, and runs the hook. Signals
// and file writes take no context in the lab; they pass Background.
func (f *fakeLab) op(ctx context.Context, name string, change func() error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", name, ctx.Err())
	}
	f.mu.Lock()
	err := f.fail[name]
	delete(f.fail, name)
	if err == nil {
		err = change()
	}
	f.ops = append(f.ops, name)
	f.mu.Unlock()
	if f.after != nil {
		f.after(name)
	}
	return err
}

// broken lists the faults still in place.
func (f *fakeLab) broken() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b []string
	for _, m := range []map[string]bool{f.killed, f.paused, f.down, f.cut, f.netem} {
		for k, v := range m {
			if v {
				b = append(b, k)
			}
		}
	}
	for cp, s := range f.cps {
		if s != fakecp.Serving {
			b = append(b, cp+" "+string(s))
		}
	}
	for n, c := range f.configs {
		if !strings.Contains(c, "roundrobin") {
			b = append(b, n+" config")
		}
	}
	sort.Strings(b)
	return b
}

func (f *fakeLab) opsSeen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

func (f *fakeLab) Signal(node string, sig syscall.Signal) error {
	return f.op(context.Background(), fmt.Sprintf("signal %s %d", node, sig), func() error {
		if f.killed[node] {
			return fmt.Errorf("halb on %s is not running", node)
		}
		switch sig {
		case syscall.SIGKILL:
			f.killed[node], f.paused[node] = true, false
		case syscall.SIGSTOP:
			f.paused[node] = true
		case syscall.SIGCONT:
			f.paused[node] = false
		}
		return nil
	})
}

func (f *fakeLab) StartHalb(ctx context.Context, node string) error {
	return f.op(ctx, "start "+node, func() error {
		if !f.killed[node] {
			return fmt.Errorf("halb on %s is already running", node)
		}
		f.killed[node] = false
		f.pids[node] = f.nextPID
		f.nextPID++
		return nil
	})
}

func (f *fakeLab) SetCP(ctx context.Context, cp string, s fakecp.State) error {
	return f.op(ctx, fmt.Sprintf("cp %s %s", cp, s), func() error { f.cps[cp] = s; return nil })
}

func (f *fakeLab) LogTail(node string, _ int) string { return node + ": last words" }

func (f *fakeLab) SetLink(ctx context.Context, host string, up bool) error {
	return f.op(ctx, fmt.Sprintf("link %s up=%v", host, up), func() error {
		f.down[host] = !up
		if !up {
			clear(f.stuck)
		}
		return nil
	})
}

func (f *fakeLab) SetPartition(ctx context.Context, a, b string, cut bool) error {
	return f.op(ctx, fmt.Sprintf("partition %s %s cut=%v", a, b, cut), func() error { f.cut[a+" "+b] = cut; return nil })
}

func (f *fakeLab) Netem(ctx context.Context, host string, _ int, _ time.Duration) (string, error) {
	return "fake", f.op(ctx, "netem "+host, func() error { f.netem[host] = true; return nil })
}

func (f *fakeLab) ClearNetem(ctx context.Context, host string) error {
	return f.op(ctx, "clear netem "+host, func() error { f.netem[host] = false; return nil })
}

// answers reports whether node's admin API would answer.
func (f *fakeLab) answers(node string) bool {
	return !f.killed[node] && !f.paused[node] && !f.down[node]
}

func (f *fakeLab) Status(ctx context.Context, node string) (admin.Snapshot, error) {
	if ctx.Err() != nil {
		return admin.Snapshot{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.answers(node) {
		return admin.Snapshot{}, errors.New("connection refused")
	}
	vip := fakeVIP.Addr().String()
	s := admin.Snapshot{VIPs: []admin.VIP{{Address: vip, Holder: f.holder, HeldHere: node == f.holder}}}
	for _, m := range f.lbs {
		mem := admin.Member{Name: m, Local: m == node, Alive: f.answers(m), Eligible: true, HolderView: map[string]string{vip: f.holder}}
		if m == f.holder {
			mem.Holds = []string{vip}
		}
		s.Members = append(s.Members, mem)
	}
	return s, nil
}

func (f *fakeLab) Halb(ctx context.Context, node string, args ...string) (string, int) {
	code := 0
	_ = f.op(ctx, "halb "+node+" "+args[0], func() error {
		if args[0] == "reload" && !strings.Contains(f.configs[node], "roundrobin") {
			code = 1
		}
		return nil
	})
	return "done", code
}

func (f *fakeLab) ReadConfig(node string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.configs[node], nil
}

func (f *fakeLab) WriteConfig(node, text string) error {
	return f.op(context.Background(), "write config "+node, func() error { f.configs[node] = text; return nil })
}

func (f *fakeLab) Holders(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := []string{f.holder}
	for n := range f.stuck {
		h = append(h, n)
	}
	return h, nil
}

func (f *fakeLab) PID(node string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killed[node] {
		return 0
	}
	return f.pids[node]
}

func (f *fakeLab) MAC(_ context.Context, node string) (string, error) { return "mac-" + node, nil }

func (f *fakeLab) Metrics(context.Context, string) (int, int64, error) { return 40, 30 << 20, nil }

func (f *fakeLab) StartProbe(ctx context.Context, _ netip.AddrPort, _ string, _ time.Duration) (ProbeRun, error) {
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return fakeProbe{f}, nil
}

type fakeProbe struct{ f *fakeLab }

func (p fakeProbe) Stop() (probe.Report, error) {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	return probe.Report{LongestGap: 30 * time.Millisecond}, p.f.probeErr
}

func (f *fakeLab) Try(ctx context.Context, _ netip.AddrPort) error { return ctx.Err() }

func (f *fakeLab) Neighbour(context.Context) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return "mac-" + f.holder, "[REACHABLE]", nil
}

func (f *fakeLab) Session() Session { return fakeSession{} }

type fakeSession struct{}

func (fakeSession) Get(ctx context.Context) (string, error) { return "cp1", ctx.Err() }
func (fakeSession) Close()                                  {}
