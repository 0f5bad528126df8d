package fakecp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files WritePKI writes into its directory, all mode 0600.
const (
	K8sCACert = "k8s-ca.crt" // Kubernetes CA (ECDSA P-256)
	K8sCAKey  = "k8s-ca.key"
	OSCACert  = "os-ca.crt" // Talos OS CA (Ed25519)
	OSCAKey   = "os-ca.key"

	TokenFile = "token" // bearer token of the token user

	Kubeconfig        = "kubeconfig"         // admin (system:masters), client certificate
	HealthKubeconfig  = "health.kubeconfig"  // halb-health, no groups, client certificate
	TokenKubeconfig   = "token.kubeconfig"   // the token user, bearer token
	Talosconfig       = "talosconfig"        // os:admin
	HealthTalosconfig = "health.talosconfig" // os:reader
)

// Identity names a client certificate in a PKI directory. Its files are
// <identity>.crt and <identity>.key (PKCS#8 "PRIVATE KEY", readable by
// curl, openssl and HAProxy) and <identity>.pem (both, for HAProxy's crt).
type Identity string

// Client identities WritePKI makes.
const (
	KubeAdmin   Identity = "admin"        // CN=admin, O=system:masters
	KubeHealth  Identity = "health"       // CN=halb-health, no groups
	TalosAdmin  Identity = "talos-admin"  // O=os:admin, Ed25519
	TalosReader Identity = "talos-reader" // O=os:reader, Ed25519
)

// Users and groups the fake control plane knows.
const (
	HealthUser   = "halb-health"
	TokenUser    = "halb-token"
	MastersGroup = "system:masters"
)

// CA returns the CA certificate file that issued id, which is also the CA
// that signs the server certificate id's client verifies.
func (id Identity) CA() string {
	if id == TalosAdmin || id == TalosReader {
		return OSCACert
	}
	return K8sCACert
}

// ClientFiles returns the certificate, key and CA file paths of id in dir.
func ClientFiles(dir string, id Identity) (cert, key, ca string) {
	return filepath.Join(dir, string(id)+".crt"), filepath.Join(dir, string(id)+".key"), filepath.Join(dir, id.CA())
}

// ClientTLS loads id's certificate from dir into a client TLS config that
// verifies the server against the issuing CA, as kubectl and talosctl do.
// Talos identities get TLS 1.3 only, like talosctl. The caller sets
// ServerName when it differs from the address dialled.
func ClientTLS(dir string, id Identity) (*tls.Config, error) {
	certFile, keyFile, caFile := ClientFiles(dir, id)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load client certificate %s: %w", id, err)
	}
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	if id.CA() == OSCACert {
		conf.MinVersion = tls.VersionTLS13
	}
	return conf, nil
}

func loadPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate", caFile)
	}
	return pool, nil
}

// newClusterCAs makes a Talos cluster's two CAs: kube-apiserver's
// (ECDSA P-256, as on Talos) and the OS CA of apid (Ed25519).
func newClusterCAs() (k8sCA *x509.Certificate, k8sKey *ecdsa.PrivateKey, osCA *x509.Certificate, osKey ed25519.PrivateKey, err error) {
	k8sKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("generate kubernetes CA key: %w", err)
	}
	k8sCA, err = selfSignCA(pkix.Name{CommonName: "kubernetes", Organization: []string{"kubernetes"}}, k8sKey)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("make kubernetes CA: %w", err)
	}
	_, osKey, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("generate OS CA key: %w", err)
	}
	osCA, err = selfSignCA(pkix.Name{CommonName: "talos", Organization: []string{"talos"}}, osKey)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("make OS CA: %w", err)
	}
	return k8sCA, k8sKey, osCA, osKey, nil
}

// WritePKI makes the two CAs of a Talos cluster and the client credentials
// a user has (kubeconfigs, talosconfigs, certificates, a bearer token) in
// dir, which it creates. endpoint is the cluster endpoint (the VIP) the
// kubeconfigs and talosconfigs point at; nodes are the control planes'
// addresses, the talosconfigs' nodes. Fake control planes given dir mint
// their server certificates from the CA keys kept there.
func WritePKI(dir string, endpoint netip.Addr, nodes []netip.Addr) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("make PKI dir: %w", err)
	}
	w := &pkiWriter{dir: dir}
	k8sCA, k8sKey, osCA, osKey, err := newClusterCAs()
	if err != nil {
		return err
	}
	w.cert(K8sCACert, k8sCA.Raw)
	w.key(K8sCAKey, k8sKey, "")
	w.cert(OSCACert, osCA.Raw)
	w.key(OSCAKey, osKey, "")

	kube := map[Identity]pkix.Name{
		KubeAdmin:  {CommonName: "admin", Organization: []string{MastersGroup}},
		KubeHealth: {CommonName: HealthUser},
	}
	kubePEM := map[Identity][2][]byte{}
	for _, id := range []Identity{KubeAdmin, KubeHealth} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("generate %s key: %w", id, err)
		}
		der, err := issue(certTemplate(kube[id], x509.ExtKeyUsageClientAuth), key.Public(), k8sCA, k8sKey)
		if err != nil {
			return fmt.Errorf("issue %s certificate: %w", id, err)
		}
		// kubeconfigs carry SEC 1 "EC PRIVATE KEY" blocks, as kubeadm and Talos write them.
		ecDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return fmt.Errorf("encode %s key: %w", id, err)
		}
		kubePEM[id] = [2][]byte{pemBytes("CERTIFICATE", der), pemBytes("EC PRIVATE KEY", ecDER)}
		w.identity(id, der, key)
	}
	talos := map[Identity]pkix.Name{
		TalosAdmin:  {CommonName: "admin", Organization: []string{"os:admin"}},
		TalosReader: {CommonName: HealthUser, Organization: []string{"os:reader"}},
	}
	talosPEM := map[Identity][2][]byte{}
	for _, id := range []Identity{TalosAdmin, TalosReader} {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return fmt.Errorf("generate %s key: %w", id, err)
		}
		der, err := issue(certTemplate(talos[id], x509.ExtKeyUsageClientAuth), pub, osCA, osKey)
		if err != nil {
			return fmt.Errorf("issue %s certificate: %w", id, err)
		}
		p8, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return fmt.Errorf("encode %s key: %w", id, err)
		}
		// talosconfigs carry PKCS#8 under Talos's own PEM type.
		talosPEM[id] = [2][]byte{pemBytes("CERTIFICATE", der), pemBytes("ED25519 PRIVATE KEY", p8)}
		w.identity(id, der, key)
	}

	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return fmt.Errorf("generate token: %w", err)
	}
	token := hex.EncodeToString(tok)
	w.file(TokenFile, []byte(token+"\n"))

	server := "https://" + netip.AddrPortFrom(endpoint, 6443).String()
	caPEM := pemBytes("CERTIFICATE", k8sCA.Raw)
	w.file(Kubeconfig, kubeconfig(server, caPEM, "admin", kubeUser{cert: kubePEM[KubeAdmin]}))
	w.file(HealthKubeconfig, kubeconfig(server, caPEM, HealthUser, kubeUser{cert: kubePEM[KubeHealth]}))
	w.file(TokenKubeconfig, kubeconfig(server, caPEM, TokenUser, kubeUser{token: token}))
	osPEM := pemBytes("CERTIFICATE", osCA.Raw)
	w.file(Talosconfig, talosconfig("admin", endpoint, nodes, osPEM, talosPEM[TalosAdmin]))
	w.file(HealthTalosconfig, talosconfig(HealthUser, endpoint, nodes, osPEM, talosPEM[TalosReader]))
	return w.err
}

// pkiWriter writes PEM files, keeping the first error.
type pkiWriter struct {
	dir string
	err error
}

func (w *pkiWriter) file(name string, b []byte) {
	if w.err != nil {
		return
	}
	if err := os.WriteFile(filepath.Join(w.dir, name), b, 0o600); err != nil {
		w.err = fmt.Errorf("write %s: %w", name, err)
	}
}

func (w *pkiWriter) cert(name string, der []byte) { w.file(name, pemBytes("CERTIFICATE", der)) }

// key writes a PKCS#8 key; extra is prepended (a certificate, for .pem).
func (w *pkiWriter) key(name string, key crypto.PrivateKey, extra string) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("encode %s: %w", name, err)
	}
	w.file(name, append([]byte(extra), pemBytes("PRIVATE KEY", der)...))
}

func (w *pkiWriter) identity(id Identity, der []byte, key crypto.PrivateKey) {
	w.cert(string(id)+".crt", der)
	w.key(string(id)+".key", key, "")
	w.key(string(id)+".pem", key, string(pemBytes("CERTIFICATE", der)))
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

type kubeUser struct {
	cert  [2][]byte // certificate and key PEM
	token string
}

// kubeconfig renders the YAML kubectl reads, with one cluster, user and
// context, all named after the user.
func kubeconfig(server string, caPEM []byte, name string, u kubeUser) []byte {
	b64 := base64.StdEncoding.EncodeToString
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\nclusters:\n  - name: halb-lab\n    cluster:\n      server: %s\n      certificate-authority-data: %s\n", server, b64(caPEM))
	fmt.Fprintf(&b, "users:\n  - name: %s\n    user:\n", name)
	if u.token != "" {
		fmt.Fprintf(&b, "      token: %s\n", u.token)
	} else {
		fmt.Fprintf(&b, "      client-certificate-data: %s\n      client-key-data: %s\n", b64(u.cert[0]), b64(u.cert[1]))
	}
	fmt.Fprintf(&b, "contexts:\n  - name: %s@halb-lab\n    context:\n      cluster: halb-lab\n      user: %s\n", name, name)
	fmt.Fprintf(&b, "current-context: %s@halb-lab\npreferences: {}\n", name)
	return []byte(b.String())
}

// talosconfig renders the YAML talosctl reads, with one context.
func talosconfig(name string, endpoint netip.Addr, nodes []netip.Addr, caPEM []byte, cert [2][]byte) []byte {
	b64 := base64.StdEncoding.EncodeToString
	ctx := "halb-lab-" + name
	var b strings.Builder
	fmt.Fprintf(&b, "context: %s\ncontexts:\n  %s:\n    endpoints:\n      - %s\n    nodes:\n", ctx, ctx, endpoint)
	for _, n := range nodes {
		fmt.Fprintf(&b, "      - %s\n", n)
	}
	fmt.Fprintf(&b, "    ca: %s\n    crt: %s\n    key: %s\n", b64(caPEM), b64(cert[0]), b64(cert[1]))
	return []byte(b.String())
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
}

func selfSignCA(name pkix.Name, key crypto.Signer) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               name,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func certTemplate(name pkix.Name, usage x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		Subject:               name,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		BasicConstraintsValid: true,
	}
}

func issue(tmpl *x509.Certificate, pub crypto.PublicKey, ca *x509.Certificate, caKey crypto.Signer) ([]byte, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = sn
	return x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
}

// authority is the part of a PKI directory a fake control plane uses: the
// CAs, to mint its server certificates and verify clients, and the token.
type authority struct {
	k8s, os     *x509.Certificate
	k8sKey      crypto.Signer
	osKey       crypto.Signer
	k8sPool     *x509.CertPool
	osPool      *x509.CertPool
	bearerToken string
}

func loadAuthority(dir string) (*authority, error) {
	a := &authority{}
	var err error
	if a.k8s, a.k8sKey, err = loadCA(dir, K8sCACert, K8sCAKey); err != nil {
		return nil, err
	}
	if a.os, a.osKey, err = loadCA(dir, OSCACert, OSCAKey); err != nil {
		return nil, err
	}
	a.k8sPool, a.osPool = x509.NewCertPool(), x509.NewCertPool()
	a.k8sPool.AddCert(a.k8s)
	a.osPool.AddCert(a.os)
	tok, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	if a.bearerToken = strings.TrimSpace(string(tok)); a.bearerToken == "" {
		return nil, fmt.Errorf("%s: empty token", filepath.Join(dir, TokenFile))
	}
	return a, nil
}

func loadCA(dir, certName, keyName string) (*x509.Certificate, crypto.Signer, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, certName), filepath.Join(dir, keyName))
	if err != nil {
		return nil, nil, fmt.Errorf("load CA %s: %w", certName, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("CA key %s cannot sign", keyName)
	}
	return pair.Leaf, signer, nil
}

// serverCert mints a server certificate from the kubernetes CA (ECDSA, like
// kube-apiserver's) or the OS CA (Ed25519, like apid's) for the addresses
// the server answers on.
func (a *authority) serverCert(name string, talos bool, addrs []netip.Addr) (tls.Certificate, error) {
	tmpl := certTemplate(pkix.Name{CommonName: name}, x509.ExtKeyUsageServerAuth)
	tmpl.DNSNames = []string{name}
	for _, ad := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ad.AsSlice()))
	}
	var key crypto.Signer
	var err error
	ca, caKey := a.k8s, a.k8sKey
	if talos {
		ca, caKey = a.os, a.osKey
		_, key, err = ed25519.GenerateKey(rand.Reader)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate server key: %w", err)
	}
	der, err := issue(tmpl, key.Public(), ca, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}, nil
}

// kubeUserOf authenticates a request the way kube-apiserver's x509 and
// token authenticators do: a client certificate chaining to the kubernetes
// CA names the user (CN) and groups (O); otherwise the bearer token.
func (a *authority) kubeUserOf(state *tls.ConnectionState, authz string) (user, bool) {
	if state != nil && len(state.PeerCertificates) > 0 {
		inter := x509.NewCertPool()
		for _, c := range state.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := state.PeerCertificates[0]
		_, err := leaf.Verify(x509.VerifyOptions{Roots: a.k8sPool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err == nil {
			return user{name: leaf.Subject.CommonName, groups: leaf.Subject.Organization}, true
		}
	}
	if tok, ok := strings.CutPrefix(authz, "Bearer "); ok && tok == a.bearerToken {
		return user{name: TokenUser}, true
	}
	return user{}, false
}

type user struct {
	name   string
	groups []string
}

func (u user) master() bool {
	for _, g := range u.groups {
		if g == MastersGroup {
			return true
		}
	}
	return false
}
