package haproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// parseTime reads an HAProxy time value: a number with an optional unit
// (us, ms, s, m, h, d); without a unit it is milliseconds.
func parseTime(s string) (time.Duration, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a time (e.g. 5000, 500ms, 5s, 1m)", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a time: %w", s, err)
	}
	unit := time.Millisecond
	switch s[i:] {
	case "", "ms":
	case "us":
		unit = time.Microsecond
	case "s":
		unit = time.Second
	case "m":
		unit = time.Minute
	case "h":
		unit = time.Hour
	case "d":
		unit = 24 * time.Hour
	default:
		return 0, fmt.Errorf("%q has an unknown unit %q (want us, ms, s, m, h or d)", s, s[i:])
	}
	// A year is far beyond any useful timeout; the cap keeps the
	// multiplication from overflowing.
	if n > int64(365*24*time.Hour/unit) {
		return 0, fmt.Errorf("%q is too long", s)
	}
	return time.Duration(n) * unit, nil
}

// formatDuration writes d the way an operator would: 5s, 50s, 10m, 1500ms.
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	case d%time.Millisecond == 0:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
	return d.String()
}

// parseCount reads a non-negative integer argument.
func parseCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a whole number of 0 or more", s)
	}
	return n, nil
}

var errNoPort = errors.New("no port")

// parseHostPort reads an HAProxy address "IP:PORT", "[IPv6]:PORT",
// "IPv6:PORT" (the last colon separates the port), "*:PORT" or ":PORT",
// with an optional ipv4@/ipv6@ prefix. A missing host means any address.
func parseHostPort(s string) (netip.AddrPort, error) {
	family := ""
	if before, after, ok := strings.Cut(s, "@"); ok {
		switch before {
		case "ipv4", "ipv6":
			family = before
			s = after
		default:
			return netip.AddrPort{}, fmt.Errorf("%q: only IP addresses are supported (not %s@ sockets)", s, before)
		}
	}
	if strings.HasPrefix(s, "[") {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%q is not [IPv6]:PORT", s)
		}
		return ap, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, errNoPort
	}
	host, port := s[:i], s[i+1:]
	if strings.Contains(port, "-") {
		return netip.AddrPort{}, fmt.Errorf("%q: port ranges are not supported; write one line per port", s)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: port must be 1-65535", s)
	}
	var a netip.Addr
	switch host {
	case "", "*":
		a = netip.IPv4Unspecified()
		if family == "ipv6" {
			a = netip.IPv6Unspecified()
		}
	default:
		a, err = netip.ParseAddr(host)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%q: %q is not an IP address; halb does not resolve host names, so a DNS outage cannot take the endpoint down", s, host)
		}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}
