// Package conntable owns the table of client connections through each VIP that a holder shares
// with its peers, so the node that takes a VIP over knows whom to tickle: the holder's side
// (a versioned set with a bounded log of changes), a compact chunked wire encoding of snapshots and of the
// changes since a version, and the receivers' side (bounded replicas that expire when their
// origin falls silent).
package conntable
