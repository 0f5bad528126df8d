// Package handoff keeps established client connections alive through a
// planned move of a VIP (docs/handoff.md): the new holder forwards, at
// layer 2, every packet of a connection it did not see start to the old
// holder, which keeps the address without answering ARP for it and serves
// its connections until they close or timeouts.drain ends. The package
// holds the pure decisions (who to forward to, when to stop, what to
// close), the offer a holder gossips, and the nftables rules, applied with
// the nft command.
package handoff
