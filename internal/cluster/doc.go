// Package cluster keeps the gossip membership of the LB hosts (hashicorp/memberlist) and each node's small gossiped state.
package cluster
