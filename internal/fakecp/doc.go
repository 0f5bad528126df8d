// Package fakecp is a stand-in control plane for the lab: a Kubernetes-API-like HTTPS /healthz and a Talos-API-like TLS port, both naming the host that answered, controllable at runtime over a unix socket.
package fakecp
