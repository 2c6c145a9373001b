// Package azure is a fake of Azure Key Vault's REST API and of the
// Microsoft Entra ID token endpoints its client uses, for the integration
// tests: the real SDK (azsecrets, azidentity), in secretfs's own process,
// talks to it over HTTPS on loopback.
//
// The client reaches it as it reaches Azure: through HTTPS_PROXY (a
// CONNECT proxy the fake serves, which tunnels every host to the fake's one
// TLS listener) and with the fake's certificate trusted through
// SSL_CERT_FILE. So vault URLs are real ones (NAME.vault.azure.net, or a
// private cloud's such as NAME.vault.fake-cloud.test with
// AZURE_AUTHORITY_HOST=https://login.fake-cloud.test), and the SDK's
// bearer-challenge exchange runs unchanged, its check that the challenge's
// resource belongs to the vault's domain included. Env gives a process
// those variables.
//
// Key Vault, as the service documents it: a request without a token gets
// 401 with a WWW-Authenticate bearer challenge (authorization, resource);
// a token must be one Entra issued for the vault domain's resource, and
// its application must be granted the vault (Key Vault Secrets User) or
// the answer is 403 ForbiddenByRbac. GET /secrets lists 25 a page with a
// nextLink; GET /secrets/NAME[/VERSION] answers the current or a given
// version (32 hex digits), with case-insensitive names and the id spelled
// as created; a disabled secret is 403 SecretDisabled; exp and nbf are
// returned, not enforced (as the service does for secrets); a missing or
// deleted secret is 404 SecretNotFound. A test can make every vault call
// fail with a status (Fail: 500, 503; 429 with Retry-After through
// Throttle), count calls, and stop and start the vault.
//
// Entra: instance discovery, the tenant's OpenID configuration, and the
// v2.0 token endpoint for client credentials with a client secret or a
// client assertion (workload identity: a Kubernetes token whose issuer,
// subject and audience match an application's federated credential; its
// signature is not checked).
//
// Not covered: access policies (only RBAC, per vault), soft-delete and
// recovery, certificates' backing secrets, tags and content types as
// filters, managed HSM, private endpoints and firewalls, CAE claims
// challenges, token expiry (tokens last an hour), real latencies and real
// throttling limits.
package azure

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/secretfs/secretfs/integration/backends/fakecloud"
)

// Fake is one vault and its tenant.
type Fake struct {
	// Vault is the vault's name; Tenant the tenant's id.
	Vault, Tenant string
	// MaxPage bounds a listing page below the service's 25.
	MaxPage int

	srv   *httptest.Server
	proxy *httptest.Server
	ca    []byte

	mu      sync.Mutex
	secrets map[string]*secret // guarded by mu; by lower-case name
	fail    int                // guarded by mu; every vault call answers this status when not 0
	retry   int                // guarded by mu; Retry-After seconds of a 429
	down    bool               // guarded by mu; the vault is stopped
	calls   map[string]int     // guarded by mu; by operation
	apps    map[string]*app    // guarded by mu; by client id
	tokens  map[string]issued  // guarded by mu; by access token
	readers map[string]bool    // guarded by mu; client ids granted the vault
	tunnels map[net.Conn]bool  // guarded by mu; open CONNECT tunnels
	echo    bool               // guarded by mu; see EchoSpelling
}

type secret struct {
	name     string // as created
	versions []*version
	deleted  bool
}

type version struct {
	id       string
	value    string
	enabled  bool
	exp, nbf *time.Time
	created  time.Time
}

type app struct {
	secret                    string // client secret
	issuer, subject, audience string // the federated credential
}

type issued struct {
	client, resource string
}

// New starts a fake of vault in tenant; Close stops it.
func New(vault, tenant string) (*Fake, error) {
	f := &Fake{Vault: strings.ToLower(vault), Tenant: tenant, secrets: map[string]*secret{}, calls: map[string]int{},
		apps: map[string]*app{}, tokens: map[string]issued{}, readers: map[string]bool{}, tunnels: map[net.Conn]bool{}}
	cert, err := f.certificate()
	if err != nil {
		return nil, err
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	f.srv.StartTLS()
	f.proxy = httptest.NewServer(http.HandlerFunc(f.connect))
	return f, nil
}

// Close stops the fake.
func (f *Fake) Close() {
	f.proxy.CloseClientConnections()
	f.closeTunnels()
	f.proxy.Close()
	f.srv.Close()
}

// Env are the variables that send a process's Azure SDK to the fake, with
// the application's client secret (EnvironmentCredential) when clientID
// is not empty.
func (f *Fake) Env(dir, clientID string) ([]string, error) {
	ca := filepath.Join(dir, "azure-fake-ca.pem")
	if err := os.WriteFile(ca, f.ca, 0o644); err != nil {
		return nil, err
	}
	env := []string{"HTTPS_PROXY=" + f.proxy.URL, "https_proxy=" + f.proxy.URL, "NO_PROXY=", "no_proxy=", "SSL_CERT_FILE=" + ca,
		"AZURE_TENANT_ID=" + f.Tenant}
	if clientID != "" {
		f.mu.Lock()
		a := f.apps[clientID]
		f.mu.Unlock()
		if a == nil || a.secret == "" {
			return nil, fmt.Errorf("azure fake: no application %s with a client secret", clientID)
		}
		env = append(env, "AZURE_CLIENT_ID="+clientID, "AZURE_CLIENT_SECRET="+a.secret)
	}
	return env, nil
}

// certificate makes the fake's certificate, for the hosts it answers.
func (f *Fake) certificate() (tls.Certificate, error) {
	cert, ca, err := fakecloud.Certificate("azure fake", "*.vault.azure.net", "login.microsoftonline.com", "*.vault.fake-cloud.test", "login.fake-cloud.test")
	f.ca = ca
	return cert, err
}

// connect is the proxy: CONNECT HOST:443 of a host the fake answers is
// tunnelled to the TLS listener; a stopped vault's host is refused.
func (f *Fake) connect(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(r.Host)
	if r.Method != http.MethodConnect || err != nil || port != "443" {
		http.Error(w, "CONNECT HOST:443 only", http.StatusMethodNotAllowed)
		return
	}
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if !f.login(host) && (!f.vaultHost(host) || down) {
		http.Error(w, "no route to "+host, http.StatusBadGateway)
		return
	}
	up, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		return
	}
	w.WriteHeader(http.StatusOK)
	down2, rw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	f.mu.Lock()
	f.tunnels[up], f.tunnels[down2] = true, true
	f.mu.Unlock()
	go pipe(up, rw.Reader)
	go pipe(down2, up)
}

func pipe(dst net.Conn, src io.Reader) {
	io.Copy(dst, src)
	dst.Close()
}

func (f *Fake) closeTunnels() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.tunnels {
		c.Close()
		delete(f.tunnels, c)
	}
}

func (f *Fake) login(host string) bool {
	return host == "login.microsoftonline.com" || host == "login.fake-cloud.test"
}

// vaultHost: host is this vault in one of the clouds.
func (f *Fake) vaultHost(host string) bool {
	return host == f.Vault+".vault.azure.net" || host == f.Vault+".vault.fake-cloud.test"
}

// Stop stops the vault (an outage: its host is refused and open
// connections are cut); Start serves it again.
func (f *Fake) Stop() {
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	f.closeTunnels()
	f.srv.CloseClientConnections()
}

// Start ends Stop.
func (f *Fake) Start() {
	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
}

// EchoSpelling makes the vault answer a secret's id in the request's
// spelling, not the one it was created with: whether the real service does
// is not documented, so a test can check that secretfs does not rely on it.
func (f *Fake) EchoSpelling(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.echo = on
}

// Fail makes every vault call answer status (0: none).
func (f *Fake) Fail(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail, f.retry = status, 0
}

// Throttle makes every vault call answer 429 with Retry-After: seconds
// (0: none).
func (f *Fake) Throttle(seconds int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail, f.retry = 0, seconds
	if seconds > 0 {
		f.fail = http.StatusTooManyRequests
	}
}

// Calls is how many calls of op came: GetSecret, ListSecrets (pages),
// Challenge (401s), Token.
func (f *Fake) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// App registers an application with a client secret.
func (f *Fake) App(clientID, clientSecret string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apps[clientID] = &app{secret: clientSecret}
}

// Federate registers an application whose federated credential trusts
// tokens of issuer, subject and audience (workload identity).
func (f *Fake) Federate(clientID, issuer, subject, audience string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apps[clientID] = &app{issuer: issuer, subject: subject, audience: audience}
}

// Grant gives clientID Key Vault Secrets User on the vault.
func (f *Fake) Grant(clientID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readers[clientID] = true
}

// Put adds a version with value to name (created, under that spelling,
// if no spelling of it exists) and returns the version's id.
func (f *Fake) Put(name, value string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.secrets[strings.ToLower(name)]
	if s == nil || s.deleted {
		s = &secret{name: name}
		f.secrets[strings.ToLower(name)] = s
	}
	b := make([]byte, 16)
	rand.Read(b)
	v := &version{id: hex.EncodeToString(b), value: value, enabled: true, created: time.Now()}
	s.versions = append(s.versions, v)
	return v.id
}

// Set changes the current version of name: enabled, exp and nbf (nil:
// none).
func (f *Fake) Set(name string, enabled bool, exp, nbf *time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.secrets[strings.ToLower(name)]; s != nil && len(s.versions) > 0 {
		v := s.versions[len(s.versions)-1]
		v.enabled, v.exp, v.nbf = enabled, exp, nbf
	}
}

// Delete deletes name.
func (f *Fake) Delete(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.secrets[strings.ToLower(name)]; s != nil {
		s.deleted = true
	}
}

func (f *Fake) count(op string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
}

func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	switch {
	case f.login(host):
		f.entra(w, r, host)
	case f.vaultHost(host):
		f.vault(w, r, host)
	default:
		http.NotFound(w, r)
	}
}

// entra answers the token endpoints of the tenant.
func (f *Fake) entra(w http.ResponseWriter, r *http.Request, host string) {
	base := "https://" + host + "/"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/common/discovery/instance":
		writeJSON(w, http.StatusOK, map[string]any{"tenant_discovery_endpoint": base + f.Tenant + "/v2.0/.well-known/openid-configuration",
			"api-version": "1.1", "metadata": []any{map[string]any{"preferred_network": host, "preferred_cache": host, "aliases": []string{host}}}})
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"):
		tenant := strings.Split(strings.Trim(r.URL.Path, "/"), "/")[0]
		if tenant != f.Tenant && tenant != "organizations" && tenant != "common" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant not found."})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"token_endpoint":                base + f.Tenant + "/oauth2/v2.0/token",
			"authorization_endpoint":        base + f.Tenant + "/oauth2/v2.0/authorize",
			"device_authorization_endpoint": base + f.Tenant + "/oauth2/v2.0/devicecode",
			"issuer":                        base + f.Tenant + "/v2.0",
			"jwks_uri":                      base + f.Tenant + "/discovery/v2.0/keys",
		})
	case r.Method == http.MethodPost && r.URL.Path == "/"+f.Tenant+"/oauth2/v2.0/token":
		f.token(w, r)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "not_found"})
	}
}

// token is the client credentials grant, with a secret or an assertion.
func (f *Fake) token(w http.ResponseWriter, r *http.Request) {
	f.count("Token")
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "unsupported_grant_type"})
		return
	}
	client := r.PostForm.Get("client_id")
	// MSAL adds openid, offline_access and profile to the resource's
	// .default scope.
	var resource string
	ok := false
	for _, sc := range strings.Fields(r.PostForm.Get("scope")) {
		if res, found := strings.CutSuffix(sc, "/.default"); found {
			resource, ok = res, true
		}
	}
	f.mu.Lock()
	a := f.apps[client]
	f.mu.Unlock()
	deny := func(code, desc string) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": code, "error_description": desc, "error_codes": []int{7000215}})
	}
	switch {
	case !ok:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_scope", "error_description": "AADSTS70011: The provided value for scope is not valid."})
		return
	case a == nil:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "unauthorized_client", "error_description": "AADSTS700016: Application not found in the directory."})
		return
	case r.PostForm.Has("client_secret"):
		if a.secret == "" || r.PostForm.Get("client_secret") != a.secret {
			deny("invalid_client", "AADSTS7000215: Invalid client secret provided.")
			return
		}
	case r.PostForm.Get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
		c, ok := fakecloud.Parse(r.PostForm.Get("client_assertion"))
		if !ok || a.subject == "" || c.Iss != a.issuer || c.Sub != a.subject || !c.HasAudience(a.audience) {
			deny("invalid_client", "AADSTS700213: No matching federated identity record found for presented assertion.")
			return
		}
	default:
		deny("invalid_client", "AADSTS7000218: The request body must contain client_assertion or client_secret.")
		return
	}
	b := make([]byte, 24)
	rand.Read(b)
	tok := "eyJ0eXAiOiJKV1QifQ.fake-" + base64.RawURLEncoding.EncodeToString(b)
	f.mu.Lock()
	f.tokens[tok] = issued{client: client, resource: resource}
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": tok})
}

// vault answers Key Vault's secrets API.
func (f *Fake) vault(w http.ResponseWriter, r *http.Request, host string) {
	resource := "https://" + host[strings.IndexByte(host, '.')+1:]
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		f.count("Challenge")
		login := "https://login.microsoftonline.com/"
		if strings.HasSuffix(host, ".fake-cloud.test") {
			login = "https://login.fake-cloud.test/"
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="%s%s", resource="%s"`, login, f.Tenant, resource))
		kvError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", "")
		return
	}
	f.mu.Lock()
	who, known := f.tokens[tok]
	granted := f.readers[who.client]
	fail, retry := f.fail, f.retry
	f.mu.Unlock()
	switch {
	case !known || who.resource != resource:
		kvError(w, http.StatusUnauthorized, "Unauthorized", "AKV10022: Invalid audience.", "")
		return
	case fail != 0:
		if retry > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(retry))
		}
		kvError(w, fail, "Throttled", "Request was not processed because too many requests were received.", "")
		return
	case !granted:
		kvError(w, http.StatusForbidden, "Forbidden", "Caller is not authorized to perform action on resource.", "ForbiddenByRbac")
		return
	}
	if r.Method != http.MethodGet || r.URL.Query().Get("api-version") == "" {
		kvError(w, http.StatusBadRequest, "BadParameter", "unsupported request", "")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == "secrets":
		f.list(w, r, host)
	case (len(parts) == 2 || len(parts) == 3) && parts[0] == "secrets":
		ver := ""
		if len(parts) == 3 {
			ver = parts[2]
		}
		f.get(w, host, parts[1], ver)
	default:
		kvError(w, http.StatusNotFound, "NotFound", "no such operation", "")
	}
}

func (f *Fake) list(w http.ResponseWriter, r *http.Request, host string) {
	f.count("ListSecrets")
	size := 25
	if f.MaxPage > 0 {
		size = min(size, f.MaxPage)
	}
	skip, _ := strconv.Atoi(r.URL.Query().Get("$skiptoken"))
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for k, s := range f.secrets {
		if !s.deleted && len(s.versions) > 0 {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	out := map[string]any{}
	var items []any
	for i := skip; i < len(names) && len(items) < size; i++ {
		s := f.secrets[names[i]]
		items = append(items, map[string]any{"id": "https://" + host + "/secrets/" + s.name, "attributes": attributes(s.versions[len(s.versions)-1])})
	}
	out["value"] = items
	if next := skip + size; next < len(names) {
		out["nextLink"] = "https://" + host + "/secrets?api-version=" + r.URL.Query().Get("api-version") + "&$skiptoken=" + strconv.Itoa(next) + "&maxresults=" + strconv.Itoa(size)
	} else {
		out["nextLink"] = nil
	}
	writeJSON(w, http.StatusOK, out)
}

func (f *Fake) get(w http.ResponseWriter, host, name, ver string) {
	f.count("GetSecret")
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.secrets[strings.ToLower(name)]
	if s == nil || s.deleted || len(s.versions) == 0 {
		kvError(w, http.StatusNotFound, "SecretNotFound", "A secret with (name/id) "+name+" was not found in this key vault.", "")
		return
	}
	v := s.versions[len(s.versions)-1]
	if ver != "" {
		i := slices.IndexFunc(s.versions, func(v *version) bool { return v.id == ver })
		if i < 0 {
			kvError(w, http.StatusNotFound, "SecretNotFound", "A secret with (name/id) "+name+"/"+ver+" was not found in this key vault.", "")
			return
		}
		v = s.versions[i]
	}
	if !v.enabled {
		kvError(w, http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
		return
	}
	spelled := s.name
	if f.echo {
		spelled = name
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": v.value, "id": "https://" + host + "/secrets/" + spelled + "/" + v.id, "attributes": attributes(v)})
}

func attributes(v *version) map[string]any {
	a := map[string]any{"enabled": v.enabled, "created": v.created.Unix(), "updated": v.created.Unix(), "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}
	if v.exp != nil {
		a["exp"] = v.exp.Unix()
	}
	if v.nbf != nil {
		a["nbf"] = v.nbf.Unix()
	}
	return a
}

func kvError(w http.ResponseWriter, status int, code, msg, inner string) {
	e := map[string]any{"code": code, "message": msg}
	if inner != "" {
		e["innererror"] = map[string]any{"code": inner}
	}
	writeJSON(w, status, map[string]any{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
