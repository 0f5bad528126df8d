package health

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
)

// TLS alert codes (RFC 8446 section 6) a server sends when it refuses a
// client certificate.
const (
	alertHandshakeFailure       = 40
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertAccessDenied           = 49
	alertCertificateRequired    = 116
)

// Diagnoses of rejected checks. The documentation quotes them
// (docs/getting-started-talos.md#check-credentials), so they change only
// together with it.
const (
	// HintAnonymous401 follows a 401 to a check without credentials.
	HintAnonymous401 = "kube-apiserver rejects anonymous requests, as Talos configures it (--anonymous-auth=false): give this check credentials (health.tls.kubeconfig), see " + DocCheckCredentials
	// HintCredentials401 follows a 401 to a check with credentials.
	HintCredentials401 = "the server does not accept this check's credentials (a client certificate from another CA, or an invalid or expired token): take them from this cluster's kubeconfig, see " + DocCheckCredentials
	// HintAnonymous403 follows a 403 to a check without credentials.
	HintAnonymous403 = "anonymous requests may not read the health endpoints here: give this check credentials (health.tls.kubeconfig), see " + DocCheckCredentials
	// HintForbidden403 follows a 403 to a check with credentials.
	HintForbidden403 = "the check's user lacks rights to the health endpoints: use a user that may read them (the system:public-info-viewer role allows /healthz, /livez and /readyz), see " + DocCheckCredentials
	// HintNoClientCert follows a TLS alert refusing a check that sent no
	// client certificate.
	HintNoClientCert = "apid requires a client certificate from the Talos OS CA: set health.tls.talosconfig (an os:reader talosconfig), see " + DocCheckCredentials
	// HintHandshakeNoCert follows a handshake_failure alert to a check that
	// sent no client certificate, which is how TLS 1.2 servers may refuse
	// one without.
	HintHandshakeNoCert = "the server refused the handshake: if it requires a client certificate (apid requires one from the Talos OS CA), set health.tls.talosconfig (an os:reader talosconfig), see " + DocCheckCredentials
	// HintWrongCA follows a TLS alert refusing the check's client
	// certificate.
	HintWrongCA = "the server does not trust this check's client certificate (wrong CA): take it from this cluster's talosconfig or kubeconfig, see " + DocCheckCredentials
	// HintCertExpired follows an alert saying the client certificate expired
	// or was revoked.
	HintCertExpired = "the server rejects this check's client certificate as expired or revoked: issue a new one, see " + DocCheckCredentials
	// HintAccessDenied follows an access_denied alert.
	HintAccessDenied = "the server denies this check's client certificate access: use one with a role that may connect (os:reader), see " + DocCheckCredentials
	// HintServerUnknownCA follows our own verification failing because the
	// server's certificate is signed by a CA the check does not trust.
	HintServerUnknownCA = "the server's certificate is not signed by the CA this check trusts (health.tls.ca_file, or the CA in its talosconfig or kubeconfig): is the check pointed at the right cluster? see " + DocCheckCredentials
	// HintServerName follows our own verification failing on the name.
	HintServerName = "the server's certificate is not valid for the name or address checked: set health.tls.server_name to a name it carries, see " + DocCheckCredentials
	// HintServerExpired follows our own verification failing on dates.
	HintServerExpired = "the server's certificate is expired or not yet valid (or a clock is wrong), see " + DocCheckCredentials
	// HintServerCert follows any other failure to verify the server.
	HintServerCert = "this check cannot verify the server's certificate with its CA (health.tls.ca_file, or the CA in its talosconfig or kubeconfig), see " + DocCheckCredentials
)

// diagnose classifies a probe error. A server that refused the check's
// client certificate, or whose certificate the check does not trust, is
// Rejected: it answered, the check is what is wrong. Anything else (refused,
// reset, unreachable, timeout) is Gone. hint says what to do about a
// rejection; cr is nil for checks without credentials.
func diagnose(err error, cr *credentials) (Failure, string) {
	if code, ok := remoteAlert(err); ok {
		if hint := alertHint(code, cr != nil && cr.hasCert); hint != "" {
			return Rejected, hint
		}
		return Gone, ""
	}
	if hint := verifyHint(err); hint != "" {
		return Rejected, hint
	}
	return Gone, ""
}

// remoteAlert returns the alert the server sent, if err carries one.
// crypto/tls reports a received alert as a net.OpError "remote error"
// wrapping an unexported type whose text is that of tls.AlertError with
// the same code, which is how the code is recovered.
func remoteAlert(err error) (uint8, bool) {
	oe, ok := errors.AsType[*net.OpError](err)
	if !ok || oe.Op != "remote error" || oe.Err == nil {
		return 0, false
	}
	if a, ok := errors.AsType[tls.AlertError](oe.Err); ok {
		return uint8(a), true
	}
	msg := oe.Err.Error()
	for _, code := range []uint8{alertHandshakeFailure, alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked,
		alertCertificateExpired, alertCertificateUnknown, alertUnknownCA, alertAccessDenied, alertCertificateRequired} {
		if tls.AlertError(code).Error() == msg {
			return code, true
		}
	}
	return 0, false
}

// alertHint explains an alert refusing the check's client certificate, or
// returns "" for an alert that says something else.
func alertHint(code uint8, sentCert bool) string {
	switch code {
	case alertHandshakeFailure:
		if !sentCert {
			return HintHandshakeNoCert
		}
		// A client whose certificate the server's CA list rules out
		// sends none; a TLS 1.2 server may answer with this alert.
		return HintWrongCA
	case alertCertificateRequired, alertBadCertificate, alertCertificateUnknown, alertUnknownCA, alertUnsupportedCertificate:
		if !sentCert {
			// TLS 1.3 servers say certificate_required, TLS 1.2 ones
			// bad_certificate, to a client without a certificate.
			return HintNoClientCert
		}
		// A client holding a certificate from a CA the server does not
		// list sends none, and hears certificate_required too.
		return HintWrongCA
	case alertCertificateRevoked, alertCertificateExpired:
		return HintCertExpired
	case alertAccessDenied:
		if !sentCert {
			return HintNoClientCert
		}
		return HintAccessDenied
	}
	return ""
}

// verifyHint explains our own failure to verify the server's certificate,
// or returns "" when err is no such failure.
func verifyHint(err error) string {
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return HintServerUnknownCA
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return HintServerName
	}
	if ci, ok := errors.AsType[x509.CertificateInvalidError](err); ok && ci.Reason == x509.Expired {
		return HintServerExpired
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return HintServerCert
	}
	return ""
}

// statusVerdict classifies an HTTP status the check does not accept: 401
// and 403 reject the check's credentials, with what to do; any other says
// the server is up but not ready.
func statusVerdict(code int, cr *credentials) (Failure, string) {
	anonymous := cr == nil || cr.source == ""
	switch {
	case code == http.StatusUnauthorized && anonymous:
		return Rejected, HintAnonymous401
	case code == http.StatusUnauthorized:
		return Rejected, HintCredentials401
	case code == http.StatusForbidden && anonymous:
		return Rejected, HintAnonymous403
	case code == http.StatusForbidden:
		return Rejected, HintForbidden403
	}
	return NotReady, ""
}
