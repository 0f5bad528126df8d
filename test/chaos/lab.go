package chaos

import (
	"context"
	"net/netip"
	"syscall"
	"time"

	"halb/internal/admin"
	"halb/internal/probe"
	"halb/test/fakecp"
)

// Lab is what a run does to the lab and reads back from it. NetnsLab is
// the namespace lab; unit tests drive the Runner with a fake. It is split
// by concern so each part stays small.
type Lab interface {
	Processes
	Network
	Admin
	Observer
	Client
}

// Processes controls the halb processes and the fake control planes.
type Processes interface {
	// Signal sends sig to node's halb; after SIGKILL it returns once the
	// process is gone.
	Signal(node string, sig syscall.Signal) error
	// StartHalb starts halb on node and returns once its admin API answers.
	StartHalb(ctx context.Context, node string) error
	// SetCP puts the fake control plane cp (cp1, cp2, ...) in state s.
	SetCP(ctx context.Context, cp string, s fakecp.State) error
	// LogTail returns the last lines of node's halb log.
	LogTail(node string, lines int) string
}

// Network cuts and degrades the lab's links.
type Network interface {
	// SetLink takes host's link down or brings it back up.
	SetLink(ctx context.Context, host string, up bool) error
	// SetPartition stops a and b reaching each other (cut) or heals that.
	SetPartition(ctx context.Context, a, b string, cut bool) error
	// Netem adds loss and delay on host's link and says by which means.
	Netem(ctx context.Context, host string, lossPct int, delay time.Duration) (how string, err error)
	// ClearNetem removes what Netem added.
	ClearNetem(ctx context.Context, host string) error
}

// Admin reaches each node's halb through its admin socket and config file.
type Admin interface {
	Status(ctx context.Context, node string) (admin.Snapshot, error)
	// Halb runs the halb CLI with args against node's admin socket and
	// returns its combined output and exit status (-1: it did not run).
	Halb(ctx context.Context, node string, args ...string) (out string, code int)
	ReadConfig(node string) (string, error)
	// WriteConfig writes node's config file as is, unchecked.
	WriteConfig(node, text string) error
}

// Observer reads the kernel's and the processes' side of each node.
type Observer interface {
	// Holders lists the nodes with the VIP on their interface.
	Holders(ctx context.Context) ([]string, error)
	// PID is node's halb process id, 0 when it is not running.
	PID(node string) int
	// MAC is the hardware address of node's LAN interface.
	MAC(ctx context.Context, node string) (string, error)
	// Metrics reads node's goroutine count and resident memory.
	Metrics(ctx context.Context, node string) (goroutines int, rss int64, err error)
}

// Client is the lab's client host, which talks to the VIP.
type Client interface {
	// StartProbe starts probing target (probe.ModeHTTPS or ModeTLS) for at
	// most d, returning once the first attempt is done.
	StartProbe(ctx context.Context, target netip.AddrPort, mode string, d time.Duration) (ProbeRun, error)
	// Try makes one new connection to target as kubectl or talosctl would.
	Try(ctx context.Context, target netip.AddrPort) error
	// Neighbour is the client's neighbour entry for the VIP: the MAC
	// ("" when none) and the entry's state.
	Neighbour(ctx context.Context) (mac, state string, err error)
	// Session opens a keep-alive connection to the VIP's API port.
	Session() Session
}

// ProbeRun is a probe started by Client.StartProbe.
type ProbeRun interface {
	// Stop ends the probe and returns its report.
	Stop() (probe.Report, error)
}

// Session sends requests over one keep-alive connection, reconnecting
// when it breaks.
type Session interface {
	// Get sends one request and returns the control plane that answered.
	Get(ctx context.Context) (cp string, err error)
	Close()
}
