// Package exitorder makes chosen sockets the first ones the kernel closes
// when the process dies, so that peers hear of a crash before its clients
// do.
//
// When a process dies without a chance to clean up (kill -9, a crash, the
// OOM killer), its kernel closes every descriptor it held. Linux queues
// the final release of each file in descriptor order and runs the queue
// last in, first out, so the highest-numbered descriptor is released
// first. A halb holding a thousand proxied connections takes tens of
// milliseconds to release them (measured in the namespace lab: its
// clients' FINs spread over 9–87 ms after the kill); its gossip sockets
// and watch connections, opened at start with small numbers, went out
// near the end, after most clients had read their EOF and retried into
// the dead host. A duplicate of such a socket at the top of the table
// holds the last reference to it, so its release, and the FIN or the
// refused port the peers wait for, comes first.
package exitorder
