package config

import "time"

// MinTCPKeepAlive is the shortest keep-alive period accepted: probing more
// often than every second only adds packets to every idle connection.
const MinTCPKeepAlive = time.Second

// tcpKeepAlive reads timeouts.tcp_keepalive. It is off unless set, as in
// HAProxy (no clitcpka/srvtcpka by default): halb's idle timeouts already
// reap sessions whose peer vanished, and each enabled socket costs the
// proxy a few setsockopt calls per connection. "0" or "off" turns it off
// explicitly.
func (v *validator) tcpKeepAlive(s string) time.Duration {
	if s == "0" || s == "off" {
		return 0
	}
	return v.duration("timeouts.tcp_keepalive", s, 0, MinTCPKeepAlive)
}
