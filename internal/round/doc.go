// Package round decides one election round: from the members' gossiped states, this node's own facts and the time, which VIPs to claim, release, keep or announce again, and why — a pure function with no clock and no I/O.
package round
