package health

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"

	"halb/internal/config"
)

// maxCredentialFile bounds every file a check reads: credential files are
// small, and a wrong path (a log, a device) must not fill the memory.
const maxCredentialFile = 1 << 20

// DocCheckCredentials is where the documentation explains check
// credentials; diagnoses point there.
const DocCheckCredentials = "docs/getting-started-talos.md#check-credentials"

// credentials are what a tls or https check presents to a server and whom
// it trusts, gathered from health.tls: files, a talosconfig or a kubeconfig.
type credentials struct {
	tls   *tls.Config
	token string // bearer token for https checks; "" for none
	// source names where the client certificate or token came from, for
	// diagnoses ("health.tls.talosconfig"); "" when the check has none.
	source   string
	hasCert  bool
	warnings []string
}

// CredentialWarnings reads the credential files of hc as NewChecker does and
// returns what an operator should change about them, such as an admin
// certificate used for a health check. Its error is the one NewChecker
// would return. Checks other than tls and https have no credentials.
func CredentialWarnings(hc config.HealthCheck) ([]string, error) {
	if hc.Type != config.CheckTLS && hc.Type != config.CheckHTTPS {
		return nil, nil
	}
	cr, err := loadCredentials(hc)
	if err != nil {
		return nil, err
	}
	return cr.warnings, nil
}

// loadCredentials builds the client side of a tls or https check from
// hc.TLS. Errors name the health.tls field, the file and the field inside
// it that is wrong.
func loadCredentials(hc config.HealthCheck) (*credentials, error) {
	o := hc.TLS
	cr := &credentials{tls: &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: o.ServerName,
		// Backends commonly serve certificates for names the LB does not
		// use; a check proves the TLS stack answers unless asked to verify
		// or given the cluster's CA with its credentials.
		InsecureSkipVerify: !o.Verify, //nolint:gosec // verification is opt-in by config
	}}
	sources := 0
	for _, f := range []string{o.Talosconfig, o.Kubeconfig, o.CertFile} {
		if f != "" {
			sources++
		}
	}
	if sources > 1 {
		return nil, errors.New("health.tls: talosconfig, kubeconfig and cert_file are mutually exclusive: give the check one client certificate")
	}
	if o.Context != "" && o.Talosconfig == "" && o.Kubeconfig == "" {
		return nil, errors.New("health.tls.context: needs health.tls.talosconfig or health.tls.kubeconfig")
	}
	switch {
	case o.Talosconfig != "":
		if err := cr.talosconfig(o); err != nil {
			return nil, fmt.Errorf("health.tls.talosconfig %s: %w", o.Talosconfig, err)
		}
	case o.Kubeconfig != "":
		if err := cr.kubeconfig(o, hc.Type); err != nil {
			return nil, fmt.Errorf("health.tls.kubeconfig %s: %w", o.Kubeconfig, err)
		}
	}
	if o.CAFile != "" {
		// An explicit CA file wins over one that came with credentials.
		data, err := readCredentialFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("health.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("health.tls.ca_file %s: no PEM certificate found", o.CAFile)
		}
		cr.tls.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("health.tls: cert_file and key_file must be set together")
	}
	if o.CertFile != "" {
		certPEM, err := readCredentialFile(o.CertFile)
		if err != nil {
			return nil, fmt.Errorf("health.tls.cert_file: %w", err)
		}
		keyPEM, err := readCredentialFile(o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("health.tls.key_file: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("health.tls.cert_file %s with key_file %s: %w", o.CertFile, o.KeyFile, err)
		}
		cr.tls.Certificates = []tls.Certificate{cert}
		cr.hasCert, cr.source = true, "health.tls.cert_file"
	}
	return cr, nil
}

// trust makes the check verify servers against the CA that came with its
// credentials: a Talos or Kubernetes CA signs exactly the certificates of
// that cluster's nodes, so verifying costs nothing and catches a check
// pointed at the wrong cluster.
func (cr *credentials) trust(pemData []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return errors.New("no PEM certificate found")
	}
	cr.tls.RootCAs = pool
	cr.tls.InsecureSkipVerify = false
	return nil
}

// talosFile is the part of a talosconfig a check uses.
type talosFile struct {
	Context  string                   `yaml:"context"`
	Contexts map[string]*talosContext `yaml:"contexts"`
}

type talosContext struct {
	CA  string `yaml:"ca"`
	Crt string `yaml:"crt"`
	Key string `yaml:"key"`
}

// talosconfig takes the client certificate and CA of a talosconfig context.
func (cr *credentials) talosconfig(o config.TLSOptions) error {
	data, err := readCredentialFile(o.Talosconfig)
	if err != nil {
		return err
	}
	var f talosFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	names := make([]string, 0, len(f.Contexts))
	for n := range f.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	name := o.Context
	if name == "" {
		name = f.Context
	}
	if name == "" {
		return fmt.Errorf("context: the file names no current context; set health.tls.context (contexts: %s)", list(names))
	}
	ctx := f.Contexts[name]
	if ctx == nil {
		return fmt.Errorf("context %q not found (contexts: %s)", name, list(names))
	}
	p := "contexts." + name
	if ctx.Crt == "" || ctx.Key == "" {
		return fmt.Errorf("%s: no client certificate (crt and key); halb needs one: create an os:reader talosconfig with talosctl config new --roles os:reader FILE", p)
	}
	crt, err := decodeBase64(p+".crt", ctx.Crt)
	if err != nil {
		return err
	}
	key, err := decodeBase64(p+".key", ctx.Key)
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return fmt.Errorf("%s.crt with %s.key: %w", p, p, err)
	}
	cr.tls.Certificates = []tls.Certificate{cert}
	cr.hasCert, cr.source = true, "health.tls.talosconfig"
	if ctx.CA != "" {
		ca, err := decodeBase64(p+".ca", ctx.CA)
		if err != nil {
			return err
		}
		if err := cr.trust(ca); err != nil {
			return fmt.Errorf("%s.ca: %w", p, err)
		}
	}
	for _, role := range []string{"os:admin", "os:operator"} {
		if cert.Leaf != nil && slices.Contains(cert.Leaf.Subject.Organization, role) {
			cr.warnings = append(cr.warnings, fmt.Sprintf(
				"health.tls.talosconfig %s: context %q has a client certificate with role %s, which can change and reboot the nodes, for a health check: use an os:reader talosconfig (talosctl config new --roles os:reader FILE)",
				o.Talosconfig, name, role))
		}
	}
	return nil
}

// kubeFile is the part of a kubeconfig (v1 Config) a check uses.
type kubeFile struct {
	CurrentContext string        `yaml:"current-context"`
	Contexts       []kubeNamed   `yaml:"contexts"`
	Clusters       []kubeCluster `yaml:"clusters"`
	Users          []kubeUser    `yaml:"users"`
}

type kubeNamed struct {
	Name    string `yaml:"name"`
	Context struct {
		Cluster string `yaml:"cluster"`
		User    string `yaml:"user"`
	} `yaml:"context"`
}

type kubeCluster struct {
	Name    string `yaml:"name"`
	Cluster struct {
		CAData        string `yaml:"certificate-authority-data"`
		CA            string `yaml:"certificate-authority"`
		TLSServerName string `yaml:"tls-server-name"`
		Insecure      bool   `yaml:"insecure-skip-tls-verify"`
	} `yaml:"cluster"`
}

type kubeUser struct {
	Name string `yaml:"name"`
	User struct {
		CertData     string     `yaml:"client-certificate-data"`
		KeyData      string     `yaml:"client-key-data"`
		Cert         string     `yaml:"client-certificate"`
		Key          string     `yaml:"client-key"`
		Token        string     `yaml:"token"`
		TokenFile    string     `yaml:"tokenFile"`
		Exec         *yaml.Node `yaml:"exec"`
		AuthProvider *yaml.Node `yaml:"auth-provider"`
	} `yaml:"user"`
}

// namesOf lists the names of kubeconfig entries, in file order.
func namesOf[T any](entries []T, name func(T) string) []string {
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = name(e)
	}
	return names
}

// kubeContext is the context a check uses out of a kubeconfig, with the
// paths of its parts inside the file for error messages.
type kubeContext struct {
	user    string // the user's name
	cluster *kubeCluster
	u       *kubeUser
	cp      string // the context's path: "contexts[0].context"
	clp     string // the cluster's path: "clusters[0].cluster"
	up      string // the user's path: "users[0].user"
	rel     func(string) string
}

// kubeconfig takes the user's client certificate or token and the
// cluster's CA of a kubeconfig context. Paths inside the file are relative
// to its directory, as kubectl reads them.
func (cr *credentials) kubeconfig(o config.TLSOptions, typ config.CheckType) error {
	data, err := readCredentialFile(o.Kubeconfig)
	if err != nil {
		return err
	}
	var f kubeFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	kc, err := f.pick(o.Context)
	if err != nil {
		return err
	}
	dir := filepath.Dir(o.Kubeconfig)
	kc.rel = func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if err := cr.kubeTrust(kc, o.Verify); err != nil {
		return err
	}
	if err := cr.kubeCert(kc, o.Kubeconfig); err != nil {
		return err
	}
	if err := cr.kubeToken(kc, o.Kubeconfig, typ); err != nil {
		return err
	}
	if !cr.hasCert && cr.token == "" {
		return kubeNoCredentials(kc)
	}
	return nil
}

// pick finds the context named name, or the current one if name is "",
// and the cluster and user it names.
func (f *kubeFile) pick(name string) (kubeContext, error) {
	if name == "" {
		name = f.CurrentContext
	}
	ctxNames := namesOf(f.Contexts, func(c kubeNamed) string { return c.Name })
	ci := slices.Index(ctxNames, name)
	switch {
	case name == "":
		return kubeContext{}, fmt.Errorf("current-context: the file names none; set health.tls.context (contexts: %s)", list(ctxNames))
	case ci < 0:
		return kubeContext{}, fmt.Errorf("context %q not found (contexts: %s)", name, list(ctxNames))
	}
	c := f.Contexts[ci].Context
	kc := kubeContext{user: c.User, cp: fmt.Sprintf("contexts[%d].context", ci)}

	clNames := namesOf(f.Clusters, func(c kubeCluster) string { return c.Name })
	cli := slices.Index(clNames, c.Cluster)
	if cli < 0 {
		return kubeContext{}, fmt.Errorf("%s.cluster: cluster %q not found (clusters: %s)", kc.cp, c.Cluster, list(clNames))
	}
	kc.cluster, kc.clp = &f.Clusters[cli], fmt.Sprintf("clusters[%d].cluster", cli)

	uNames := namesOf(f.Users, func(u kubeUser) string { return u.Name })
	ui := slices.Index(uNames, c.User)
	if ui < 0 {
		return kubeContext{}, fmt.Errorf("%s.user: user %q not found (users: %s)", kc.cp, c.User, list(uNames))
	}
	kc.u, kc.up = &f.Users[ui], fmt.Sprintf("users[%d].user", ui)
	return kc, nil
}

// kubeTrust takes from the context's cluster whom to trust and by which
// name. verify (health.tls.verify) overrides the cluster's
// insecure-skip-tls-verify.
func (cr *credentials) kubeTrust(kc kubeContext, verify bool) error {
	cl, clp := kc.cluster.Cluster, kc.clp
	var ca []byte
	var err error
	field := clp + ".certificate-authority-data"
	switch {
	case cl.CAData != "":
		if ca, err = decodeBase64(field, cl.CAData); err != nil {
			return err
		}
	case cl.CA != "":
		field = clp + ".certificate-authority"
		if ca, err = readCredentialFile(kc.rel(cl.CA)); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	if ca != nil {
		if err := cr.trust(ca); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	if cl.Insecure && !verify {
		cr.tls.InsecureSkipVerify = true
	}
	if cl.TLSServerName != "" && cr.tls.ServerName == "" {
		cr.tls.ServerName = cl.TLSServerName
	}
	return nil
}

// pemPair is a client certificate and key as read from a kubeconfig
// user, with the fields they came from.
type pemPair struct {
	cert, key           []byte
	certField, keyField string
}

// kubeCertPEM reads the user's client certificate and key, inline or
// from files. Both are nil when the user has none.
func kubeCertPEM(kc kubeContext) (pemPair, error) {
	u, up := kc.u.User, kc.up
	p := pemPair{certField: up + ".client-certificate-data", keyField: up + ".client-key-data"}
	var err error
	switch {
	case u.CertData != "" || u.KeyData != "":
		if p.cert, err = decodeBase64(p.certField, u.CertData); err != nil {
			return p, err
		}
		if p.key, err = decodeBase64(p.keyField, u.KeyData); err != nil {
			return p, err
		}
	case u.Cert != "" || u.Key != "":
		p.certField, p.keyField = up+".client-certificate", up+".client-key"
		if u.Cert == "" || u.Key == "" {
			return p, fmt.Errorf("%s and %s go together", p.certField, p.keyField)
		}
		if p.cert, err = readCredentialFile(kc.rel(u.Cert)); err != nil {
			return p, fmt.Errorf("%s: %w", p.certField, err)
		}
		if p.key, err = readCredentialFile(kc.rel(u.Key)); err != nil {
			return p, fmt.Errorf("%s: %w", p.keyField, err)
		}
	}
	return p, nil
}

// kubeCert takes the user's client certificate, if it has one, and warns
// about one that can do anything in the cluster.
func (cr *credentials) kubeCert(kc kubeContext, path string) error {
	p, err := kubeCertPEM(kc)
	if err != nil {
		return err
	}
	if p.cert == nil && p.key == nil {
		return nil
	}
	if len(p.cert) == 0 || len(p.key) == 0 {
		return fmt.Errorf("%s and %s go together", p.certField, p.keyField)
	}
	cert, err := tls.X509KeyPair(p.cert, p.key)
	if err != nil {
		return fmt.Errorf("%s with %s: %w", p.certField, p.keyField, err)
	}
	cr.tls.Certificates = []tls.Certificate{cert}
	cr.hasCert, cr.source = true, "health.tls.kubeconfig"
	if cert.Leaf != nil && slices.Contains(cert.Leaf.Subject.Organization, "system:masters") {
		cr.warnings = append(cr.warnings, fmt.Sprintf(
			"health.tls.kubeconfig %s: user %q has a client certificate in group system:masters (cluster-admin, beyond the reach of RBAC) for a health check: use a client certificate for a user with no rights beyond the health endpoints (any authenticated user may read /healthz, /livez and /readyz)",
			path, kc.user))
	}
	return nil
}

// kubeToken takes the user's bearer token, if it has one, refuses it on a
// check that cannot send it and warns when it would go to servers the
// check does not verify.
func (cr *credentials) kubeToken(kc kubeContext, path string, typ config.CheckType) error {
	u, up := kc.u.User, kc.up
	switch {
	case u.Token != "":
		cr.token = strings.TrimSpace(u.Token)
	case u.TokenFile != "":
		tok, err := readCredentialFile(kc.rel(u.TokenFile))
		if err != nil {
			return fmt.Errorf("%s.tokenFile: %w", up, err)
		}
		cr.token = strings.TrimSpace(string(tok))
		if cr.token == "" {
			return fmt.Errorf("%s.tokenFile %s: empty", up, kc.rel(u.TokenFile))
		}
	}
	if cr.token != "" && cr.tls.InsecureSkipVerify {
		cr.warnings = append(cr.warnings, fmt.Sprintf(
			"health.tls.kubeconfig %s: user %q sends a bearer token to servers whose certificate the check does not verify, so anyone in the path can take it: give the cluster a certificate-authority-data, or set health.tls.ca_file",
			path, kc.user))
	}
	if cr.token != "" && !cr.hasCert {
		if typ != config.CheckHTTPS {
			return fmt.Errorf("%s: a token user on a %s check: only an https check can send a bearer token; use type: https, or a user with a client certificate", up, typ)
		}
		cr.source = "health.tls.kubeconfig"
	}
	return nil
}

// kubeNoCredentials explains why a user with neither a client certificate
// nor a token cannot serve a check.
func kubeNoCredentials(kc kubeContext) error {
	u, up := kc.u.User, kc.up
	switch {
	case u.Exec != nil:
		return fmt.Errorf("%s.exec: halb does not run credential plugins; it needs a user with a client certificate (client-certificate-data and client-key-data) or a token: issue a certificate for a user with no other rights, or a service account token (kubectl create token), see %s", up, DocCheckCredentials)
	case u.AuthProvider != nil:
		return fmt.Errorf("%s.auth-provider: halb does not run auth providers; it needs a user with a client certificate (client-certificate-data and client-key-data) or a token: issue a certificate for a user with no other rights, or a service account token (kubectl create token), see %s", up, DocCheckCredentials)
	}
	return fmt.Errorf("%s: user %q has neither a client certificate nor a token; halb needs one of them, see %s", up, kc.user, DocCheckCredentials)
}

// decodeBase64 decodes a base64 field of a credential file; whitespace,
// as in folded YAML, is ignored.
func decodeBase64(field, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%s: missing", field)
	}
	b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return b, nil
}

// readCredentialFile reads a file a check needs. It refuses what is not a
// regular file, opening without blocking, so that a FIFO or a device
// named by mistake fails at once instead of hanging the daemon's start,
// and files larger than maxCredentialFile.
func readCredentialFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, st.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxCredentialFile {
		return nil, fmt.Errorf("%s: larger than %d KiB", path, maxCredentialFile>>10)
	}
	return data, nil
}

// list joins names for an error message.
func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
