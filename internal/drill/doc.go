// Package drill measures a failover drill from the operator's side: it probes every frontend on the VIP, asks the daemon to move the VIP, times each step on a timeline from the nodes' status, and judges the outage.
package drill
