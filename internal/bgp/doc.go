// Package bgp announces halb's VIPs as host routes to BGP peers with
// GoBGP embedded as a library: a Speaker dials the configured routers,
// announces and withdraws /32 and /128 prefixes with their attributes, and
// reports each session's state.
package bgp
