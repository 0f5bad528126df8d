// Package witness probes a reachability witness (such as the default gateway) so that, in a two-node pair, a node cut off from the network stops being eligible for the VIP instead of causing split brain.
package witness
