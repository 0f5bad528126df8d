// Package fakecp is a stand-in Talos control plane for the lab: a
// Kubernetes-API-like HTTPS port and a Talos-API-like TLS port, both
// naming the host that answered, authenticating clients as a stock Talos
// node does, and controllable at runtime over a unix socket.
//
// WritePKI makes a cluster's credentials: the Kubernetes CA (ECDSA) and
// the Talos OS CA (Ed25519), client certificates, a bearer token, and
// kubeconfigs and talosconfigs in the shapes kubectl and talosctl read.
// A server given that directory (Options.PKIDir) mints its own server
// certificates from the CAs, for its listen addresses and Options.SANs.
//
// The API port behaves like kube-apiserver with --anonymous-auth=false: it
// asks for a client certificate but verifies it only in its authenticator,
// so a missing or untrusted one (without a valid bearer token) gets 401
// with a Status body, not a failed handshake. Any authenticated user may
// read /healthz, /livez and /readyz (with ?verbose, one line per check);
// only system:masters may read anything else (200 "ok NAME"), others get
// 403. A GET with watch=true streams a JSON line every 100 ms. Shutdown is
// --shutdown-delay-duration: /readyz fails at once, everything else is
// served until the delay ends, then watches end with the end of their
// chunked body and the listeners close.
//
// The Talos port behaves like apid: TLS 1.3 only, a client certificate
// from the OS CA required. Without ALPN a client reads NAME and the server
// closes; with ALPN h2 (gRPC, as talosctl speaks) it gets "NAME tick N"
// lines until either side ends the stream, the server with close_notify.
//
// Both ports count, by client address, failed handshakes, 401s, 403s and
// authenticated requests (Status), and log a failed handshake at Warn, so
// tests can assert that health checks authenticate. A connection that
// closes before sending any byte of a ClientHello (a plain TCP check) is
// counted apart, as closed_before_hello, and is not a failed handshake:
// apid (grpc-go) does not log it at all, and kube-apiserver (Go's
// net/http) logs it as "TLS handshake error ... EOF", which the fake
// mirrors by logging it at Warn on the API port only. A TCP check is thus
// visible, and distinguishable from a credential problem. Likewise a
// client whose certificate was accepted but which hangs up before the
// server has sent its TLS 1.3 session tickets (HAProxy's check-ssl does)
// fails the server's side of the handshake in Go; it is counted as
// closed_after_handshake, not as a failed handshake, since nothing was
// refused.
//
// Without a PKI directory the server uses a self-signed certificate and
// answers anyone, as it did before it authenticated.
package fakecp
