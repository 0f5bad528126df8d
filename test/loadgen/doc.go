// Package loadgen makes and answers the proxy benchmark's TCP load: bulk streams, connection churn, request/response and idle connections.
package loadgen
