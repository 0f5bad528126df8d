// Package events is the daemon's in-process bus of state changes (VIP
// claimed or released, server up or down, member joined, left or failed),
// kept in a bounded ring for `halb events --since` and fanned out to
// subscribers that may be slow without ever slowing the publisher.
package events
