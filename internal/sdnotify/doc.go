// Package sdnotify tells systemd about the daemon's state (ready, stopping,
// reloading, status, watchdog pings) over the NOTIFY_SOCKET datagram protocol.
package sdnotify
