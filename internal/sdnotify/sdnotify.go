package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sendTimeout bounds one datagram write, so a wedged systemd cannot hang the
// daemon's startup or shutdown.
const sendTimeout = 2 * time.Second

// Notifier sends state changes to systemd. The zero value and a Notifier
// built outside systemd (NOTIFY_SOCKET unset) do nothing and return nil.
// Its methods are safe for concurrent use.
type Notifier struct {
	addr     *net.UnixAddr // nil: not started by systemd with notify support
	bad      string        // a NOTIFY_SOCKET value this client cannot use
	watchdog time.Duration // 0: watchdog not enabled for this process
}

// New reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the
// environment. It does no I/O: the socket is used only when a message is sent.
func New() *Notifier {
	return fromEnv(os.Getenv, os.Getpid())
}

// fromEnv builds a Notifier from getenv as seen by the process pid.
func fromEnv(getenv func(string) string, pid int) *Notifier {
	n := &Notifier{}
	sock := getenv("NOTIFY_SOCKET")
	switch {
	case sock == "":
		return n
	case strings.HasPrefix(sock, "/"), strings.HasPrefix(sock, "@"):
		// Go maps a leading '@' to the abstract namespace itself.
		n.addr = &net.UnixAddr{Name: sock, Net: "unixgram"}
	default:
		// systemd also knows vsock: addresses, used only for VMs; say so
		// on the first message rather than silently dropping it.
		n.bad = sock
		return n
	}
	n.watchdog = watchdogInterval(getenv, pid)
	return n
}

// watchdogInterval follows sd_watchdog_enabled: WATCHDOG_USEC is the
// timeout, and WATCHDOG_PID, when set, names the one process it is meant
// for (a child that inherited the environment must not ping).
func watchdogInterval(getenv func(string) string, pid int) time.Duration {
	usec, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 || usec > uint64(time.Duration(1<<63-1)/time.Microsecond) {
		return 0
	}
	if p := getenv("WATCHDOG_PID"); p != "" {
		if want, err := strconv.Atoi(p); err != nil || want != pid {
			return 0
		}
	}
	return time.Duration(usec) * time.Microsecond
}

// Ready tells systemd that startup is complete (READY=1): with Type=notify,
// units ordered after halb start only now.
func (n *Notifier) Ready() error { return n.send("READY=1") }

// Reloading tells systemd that a configuration reload has begun
// (RELOADING=1 with MONOTONIC_USEC=, which systemd needs to tell this reload
// from an earlier one). Send Ready when it is over, applied or refused:
// until then `systemctl reload` waits and the unit shows "reloading".
func (n *Notifier) Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("notify systemd of a reload: read CLOCK_MONOTONIC: %w", err)
	}
	return n.send(reloadingMessage(ts))
}

func reloadingMessage(ts unix.Timespec) string {
	usec := uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10)
}

// Stopping tells systemd that a graceful stop has begun (STOPPING=1).
func (n *Notifier) Stopping() error { return n.send("STOPPING=1") }

// Status sets the one-line status that `systemctl status` shows. Line
// breaks are replaced by spaces, since they separate fields in the protocol.
func (n *Notifier) Status(s string) error {
	return n.send("STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s))
}

// Watchdog sends one keep-alive ping (WATCHDOG=1).
func (n *Notifier) Watchdog() error { return n.send("WATCHDOG=1") }

// WatchdogInterval is the watchdog timeout systemd set for this process,
// or 0 when the watchdog is not enabled (or NOTIFY_SOCKET is unset).
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// RunWatchdog pings systemd at half the watchdog interval for as long as
// healthy returns true; while it returns false, pings stop, so systemd
// kills and restarts a daemon that stays wedged. The first ping is sent at
// once. It returns nil when ctx is cancelled, at once when the watchdog is
// not enabled, and an error when a ping cannot be sent. healthy is called
// from RunWatchdog's goroutine before every ping and should return quickly.
func (n *Notifier) RunWatchdog(ctx context.Context, healthy func() bool) error {
	interval := n.WatchdogInterval()
	if interval <= 0 {
		return nil
	}
	// Half the interval, as sd_watchdog_enabled(3) advises, leaves room for
	// one late ping without a restart.
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		if healthy() {
			if err := n.Watchdog(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// send writes one datagram to systemd. A socket per message keeps the
// Notifier free of state to open or close, and these messages are rare.
func (n *Notifier) send(state string) error {
	if n == nil {
		return nil
	}
	if n.bad != "" {
		return fmt.Errorf("notify systemd %q: unsupported NOTIFY_SOCKET %q", state, n.bad)
	}
	if n.addr == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("notify systemd %q via %s: %w", state, n.addr.Name, err)
	}
	defer func() { _ = c.Close() }()
	if err := c.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return fmt.Errorf("notify systemd %q via %s: %w", state, n.addr.Name, err)
	}
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify systemd %q via %s: %w", state, n.addr.Name, err)
	}
	return nil
}
