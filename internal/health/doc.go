// Package health probes backend servers (tcp, tls, http, https), with the
// credentials a Talos or Kubernetes server demands (talosconfig,
// kubeconfig), says why a probe failed (gone, not ready, or rejected for
// credentials), and turns results into up/down states with rise and fall.
package health
