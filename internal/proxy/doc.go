// Package proxy runs L4 TCP frontends that forward each client connection to a server picked from a backend pool.
package proxy
