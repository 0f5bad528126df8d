package lab

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"halb/internal/probe"
	"halb/test/fakecp"
	"halb/test/netnsrun"
)

// Lab addresses: the seed topology, inside the lab's own namespaces only.
var (
	subnet   = netip.MustParsePrefix("192.168.66.0/24")
	clientIP = netip.MustParseAddr("192.168.66.100")
)

// VIP is the virtual address the lab's halb nodes share.
func VIP() netip.Addr { return netip.MustParseAddr("192.168.66.160") }

// LBAddr is the address of LB node n (1-based): 192.168.66.150+n.
func LBAddr(n int) netip.Addr { return hostAddr(150 + n) }

// CPAddr is the address of control plane n (1-based): 192.168.66.160+n.
func CPAddr(n int) netip.Addr { return hostAddr(160 + n) }

// ClientAddr is the client's address.
func ClientAddr() netip.Addr { return clientIP }

func hostAddr(last int) netip.Addr {
	b := subnet.Addr().As4()
	b[3] = byte(last)
	return netip.AddrFrom4(b)
}

// Options configure a lab.
type Options struct {
	Prefix  string // namespace name prefix, 2-6 of [a-z0-9]; "" picks "hl" + 4 random hex digits
	LBs     int    // LB nodes lb1..lbN (default 2, at most 9)
	CPs     int    // fake control planes cp1..cpN (default 3, at most 9)
	HalbBin string // the halb binary; "" builds no halb configs and starts no halb
	LabBin  string // the halb-lab binary, run for fake control planes and probes
	WorkDir string // configs, logs, sockets and PIDs; "" makes a temporary one that Close removes

	// StartHalb makes Up start halb on every LB node and wait for its admin socket.
	StartHalb bool
	// Insecure uses insecure_gossip instead of a key made by `halb keygen`.
	Insecure bool
	// Policy is "preempt" or "sticky"; "" leaves halb's default.
	Policy string
	// PreemptDelay is cluster.preempt_delay; 0 leaves halb's default.
	PreemptDelay time.Duration
	// Quorum sets cluster.quorum.
	Quorum bool
	// Profile is cluster.profile ("lan" or "fast"); "" leaves halb's default.
	Profile string
	// Priorities of lb1, lb2, ...; missing entries default to 200, 100, 50, 25, ...
	Priorities []int
	// HalbArgs are appended to every `halb run`, e.g. --log-level debug.
	HalbArgs []string
	// Mutate, if set, rewrites each node's config text before it is written.
	Mutate func(node, yaml string) string
	// Router builds the routed topology (router.go): the client behind a
	// router namespace running FRR (zebra and bgpd) that peers with the LB
	// nodes, instead of the client on the LB segment.
	Router bool
	// PinFlows makes the router stateful (router.go, pinFlows): an
	// established flow keeps the LB node its first packet was routed to,
	// whatever the ECMP route becomes, as a router with flow pinning
	// would. Without it the router hashes every packet over the current
	// paths (plain ECMP), as FRR 8.4 on Linux does.
	PinFlows bool
	// FRRDir holds FRR's zebra and bgpd; "" is DefaultFRRDir.
	FRRDir string
	// NoCheckCredentials renders the health checks without their tls
	// credential blocks: an operator who forgot them, whose checks the
	// control planes answer with 401 or a failed handshake.
	NoCheckCredentials bool
	// IdleFrontend adds a frontend on VIP:IdlePort to a plain TCP server
	// in each control plane's namespace that holds what it accepts
	// (HoldIdle), raises maxconn to 100 000 and the idle timeouts to an
	// hour: for measuring halb with tens of thousands of open connections.
	IdleFrontend bool
}

// Lab is a running namespace lab. Methods are safe for concurrent use.
type Lab struct {
	opts   Options
	log    *slog.Logger
	prefix string
	dir    string
	ownDir bool

	mu     sync.Mutex
	procs  map[string]*proc // by name: lb1, cp1, probe-...
	closed bool
	probes int

	idle      *idleServers // with Options.IdleFrontend
	idleAddrs int          // client addresses HoldIdle added

	dialers map[string]*netnsrun.Dialer // by host, for Dial
}

// New returns a lab; it touches nothing until Up.
func New(opts Options, log *slog.Logger) *Lab {
	if opts.LBs <= 0 {
		opts.LBs = 2
	}
	if opts.CPs <= 0 {
		opts.CPs = 3
	}
	return &Lab{opts: opts, log: log.With("component", "lab"), procs: map[string]*proc{}}
}

// Prefix is the namespace prefix, known after Up starts.
func (l *Lab) Prefix() string { return l.prefix }

// WorkDir holds configs, logs (<name>.log), sockets and PIDs.
func (l *Lab) WorkDir() string { return l.dir }

// NS names a lab namespace: "sw", "cl", "lb1", "cp2", ...
func (l *Lab) NS(host string) string { return l.prefix + "-" + host }

// LBNames lists lb1..lbN.
func (l *Lab) LBNames() []string { return names("lb", l.opts.LBs) }

// CPNames lists cp1..cpN.
func (l *Lab) CPNames() []string { return names("cp", l.opts.CPs) }

func names(kind string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", kind, i+1)
	}
	return out
}

// Up builds the namespaces and links, starts the fake control planes and,
// with Options.StartHalb, halb on every LB node. On error the caller still
// calls Close, which removes whatever was built.
func (l *Lab) Up(ctx context.Context) error {
	if l.opts.LBs > 9 || l.opts.CPs > 9 {
		return errors.New("lab: at most 9 LB nodes and 9 control planes")
	}
	if l.prefix = l.opts.Prefix; l.prefix == "" {
		b := make([]byte, 2)
		if _, err := rand.Read(b); err != nil {
			return fmt.Errorf("pick lab prefix: %w", err)
		}
		l.prefix = "hl" + hex.EncodeToString(b)
	}
	if !validPrefix(l.prefix) {
		return fmt.Errorf("lab prefix %q: want 2-6 lowercase letters or digits", l.prefix)
	}
	if existing, err := Namespaces(ctx, l.prefix); err != nil {
		return err
	} else if len(existing) > 0 {
		l.prefix = "" // not ours: Close must not delete them
		return fmt.Errorf("namespaces %v already exist: run `halb-lab down --prefix %s` or pick another prefix", existing, l.opts.Prefix)
	}
	if err := l.makeDir(); err != nil {
		return err
	}
	l.log = l.log.With("lab", l.prefix)
	l.log.Info("building lab", "workdir", l.dir)
	cps := make([]netip.Addr, l.opts.CPs)
	for i := range cps {
		cps[i] = CPAddr(i + 1)
	}
	if err := fakecp.WritePKI(l.PKIDir(), VIP(), cps); err != nil {
		return fmt.Errorf("make the lab's PKI: %w", err)
	}
	if err := l.buildNet(ctx); err != nil {
		return err
	}
	if l.opts.Router {
		if err := l.startRouter(ctx); err != nil {
			return err
		}
	}
	if err := l.startServers(ctx); err != nil {
		return err
	}
	if l.opts.HalbBin == "" {
		return nil
	}
	if err := l.writeConfigs(ctx); err != nil {
		return err
	}
	if l.opts.StartHalb {
		for _, lb := range l.LBNames() {
			if err := l.StartHalb(ctx, lb); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *Lab) makeDir() error {
	l.dir = l.opts.WorkDir
	if l.dir == "" {
		d, err := os.MkdirTemp("", "halb-lab-")
		if err != nil {
			return fmt.Errorf("make lab workdir: %w", err)
		}
		l.dir, l.ownDir = d, true
	}
	abs, err := filepath.Abs(l.dir)
	if err != nil {
		return fmt.Errorf("lab workdir: %w", err)
	}
	l.dir = abs
	if err := os.MkdirAll(filepath.Join(l.dir, "pids"), 0o755); err != nil {
		return fmt.Errorf("make lab workdir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, "prefix"), []byte(l.prefix+"\n"), 0o644); err != nil {
		return fmt.Errorf("record lab prefix: %w", err)
	}
	return nil
}

// startServers starts the fake control planes and, with
// Options.IdleFrontend, the idle servers.
func (l *Lab) startServers(ctx context.Context) error {
	for i, cp := range l.CPNames() {
		if err := l.startCP(ctx, cp, CPAddr(i+1)); err != nil {
			return err
		}
	}
	if l.opts.IdleFrontend {
		return l.startIdleServers()
	}
	return nil
}

func (l *Lab) startCP(ctx context.Context, name string, addr netip.Addr) error {
	if err := l.startFakeCP(ctx, name, name, name, addr); err != nil {
		return fmt.Errorf("start fake control plane %s: %w", name, err)
	}
	return nil
}

func (l *Lab) cpSocket(name string) string { return filepath.Join(l.dir, name+".sock") }

// PKIDir holds the cluster's CAs and client credentials (fakecp.WritePKI),
// made at Up; the fake control planes authenticate against it.
func (l *Lab) PKIDir() string { return filepath.Join(l.dir, "pki") }

// Kubeconfig is the administrator's kubeconfig (system:masters).
func (l *Lab) Kubeconfig() string { return filepath.Join(l.PKIDir(), fakecp.Kubeconfig) }

// Talosconfig is the administrator's talosconfig (os:admin).
func (l *Lab) Talosconfig() string { return filepath.Join(l.PKIDir(), fakecp.Talosconfig) }

// ClientTLS is the client TLS config of identity id from the lab's PKI,
// for clients other than the probe that talk to the control planes or the
// VIP, as kubectl (fakecp.KubeAdmin) and talosctl (fakecp.TalosAdmin) do.
func (l *Lab) ClientTLS(id fakecp.Identity) (*tls.Config, error) {
	return fakecp.ClientTLS(l.PKIDir(), id)
}

// probeCredentials are the halb-lab probe flags that present the
// administrator's credentials in mode, like kubectl and talosctl.
func (l *Lab) probeCredentials(mode string) []string {
	id := fakecp.KubeAdmin
	switch mode {
	case probe.ModeHTTPS:
	case probe.ModeTLS:
		id = fakecp.TalosAdmin
	default:
		return nil
	}
	cert, key, ca := fakecp.ClientFiles(l.PKIDir(), id)
	return []string{"--cert", cert, "--key", key, "--ca", ca}
}

// CP returns the control client of fake control plane cpN (1-based).
func (l *Lab) CP(n int) *fakecp.Client { return fakecp.NewClient(l.cpSocket(fmt.Sprintf("cp%d", n))) }

// LogTail returns the last n lines of a process's log (lb1, cp2, ...).
func (l *Lab) LogTail(name string, n int) string {
	b, err := os.ReadFile(filepath.Join(l.dir, name+".log"))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Log returns a process's whole log.
func (l *Lab) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, name+".log"))
	return string(b)
}

// Close stops every process (SIGTERM, SIGKILL after 5 s) and deletes the
// lab's namespaces. It is idempotent and safe after a partial Up.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	for _, d := range l.dialers {
		_ = d.Close()
	}
	procs := make([]*proc, 0, len(l.procs))
	graces := make([]time.Duration, 0, len(l.procs))
	lbs := l.LBNames()
	for name, p := range l.procs {
		procs = append(procs, p)
		// A stopping halb drains its open sessions for up to
		// timeouts.drain (8 s in some labs), as StopHalb allows.
		grace := 5 * time.Second
		if slices.Contains(lbs, name) {
			grace = 10 * time.Second
		}
		graces = append(graces, grace)
	}
	l.mu.Unlock()

	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.stop(syscall.SIGTERM, graces[i])
		}()
	}
	wg.Wait()
	if l.idle != nil {
		l.idle.close()
	}
	if l.prefix != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		errs = append(errs, Down(ctx, "", l.prefix))
	}
	if l.ownDir {
		errs = append(errs, os.RemoveAll(l.dir))
	}
	return errors.Join(errs...)
}

// poll calls cond every 20 ms until it reports done or fails, or d passes.
func poll(ctx context.Context, d time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s: %w", d, ctx.Err())
		case <-t.C:
		}
	}
}
