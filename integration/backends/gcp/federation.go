package gcp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/secretfs/secretfs/integration/backends/fakecloud"
)

// The fake's identities, for a test of a pod's own Google identity
// (workload identity federation): StartTLS serves the API over TLS and
// checks each call's bearer token; ServeSTS serves Google's STS token
// exchange and the IAM credentials API's generateAccessToken, over TLS
// with the same certificate (CAFile trusts it).
//
// One pool provider (Pool) is trusted. STS exchanges a Kubernetes
// service-account token whose audience is the pool's for a federated token
// of principal://…/subject/SUB, where SUB is the token's sub claim; the
// JWT's signature is not checked (the fake is no identity provider). A
// federated principal may impersonate the service accounts it was let
// (AllowImpersonation). Grant gives a principal secrets to read; a
// principal granted "" reads and lists the whole project. A call with no
// token, or one the fake did not issue, is UNAUTHENTICATED; one the grants
// do not cover is PERMISSION_DENIED.
//
// Not covered: attribute
// mappings and conditions, workforce pools, the token info endpoint.

// StartTLS is Start over TLS, with bearer tokens checked.
func (f *Fake) StartTLS(addr string) (string, error) {
	cert, err := f.certificate()
	if err != nil {
		return "", err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)), grpc.UnaryInterceptor(f.intercept))
	registerService(srv, f)
	f.mu.Lock()
	f.srv, f.addr, f.checkTokens = srv, lis.Addr().String(), true
	f.mu.Unlock()
	go srv.Serve(lis)
	return lis.Addr().String(), nil
}

// certificate is the fake's one certificate, for 127.0.0.1, made at the
// first call.
func (f *Fake) certificate() (tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cert != nil {
		return *f.cert, nil
	}
	cert, ca, err := fakecloud.Certificate("gcp fake", "127.0.0.1", "localhost")
	if err != nil {
		return tls.Certificate{}, err
	}
	f.cert, f.caPEM = &cert, ca
	return cert, nil
}

// CAFile writes the fake's certificate into dir and returns its path, for
// SSL_CERT_FILE.
func (f *Fake) CAFile(dir string) (string, error) {
	if _, err := f.certificate(); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := filepath.Join(dir, "gcp-fake-ca.pem")
	return p, os.WriteFile(p, f.caPEM, 0o644)
}

// Pool makes provider (//iam.googleapis.com/projects/N/locations/global/
// workloadIdentityPools/POOL/providers/ID) the pool provider STS trusts,
// for tokens of audience.
func (f *Fake) Pool(provider, audience string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pool, f.poolAudience = provider, audience
}

// Subject is the federated principal of a Kubernetes token's sub claim.
func (f *Fake) Subject(sub string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	pool, _, _ := strings.Cut(f.pool, "/providers/")
	return "principal:" + pool + "/subject/" + sub
}

// Grant lets principal (Subject(sub), or serviceAccount:EMAIL) read ids; ""
// is the whole project, listing included.
func (f *Fake) Grant(principal string, ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.grants[principal] == nil {
		f.grants[principal] = map[string]bool{}
	}
	for _, id := range ids {
		f.grants[principal][id] = true
	}
}

// AllowImpersonation lets principal take email's tokens, or no longer.
func (f *Fake) AllowImpersonation(principal, email string, allowed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.impersonators[principal+"\x00"+email] = allowed
}

// TokenLifetime sets how long the tokens STS and generateAccessToken issue
// last (an hour unless set).
func (f *Fake) TokenLifetime(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lifetime = d
}

func (f *Fake) tokenLifetime() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lifetime <= 0 {
		return time.Hour
	}
	return f.lifetime
}

// ServeSTS serves STS and the IAM credentials API until the test ends and
// returns their base URL (STS is BASE/v1/token).
func (f *Fake) ServeSTS() (string, error) {
	cert, err := f.certificate()
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/token", f.exchange)
	mux.HandleFunc("POST /v1/projects/-/serviceAccounts/{call}", f.generateAccessToken)
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	f.mu.Lock()
	f.stops = append(f.stops, srv.Close)
	f.mu.Unlock()
	return srv.URL, nil
}

// exchange is STS's token exchange (RFC 8693, as Google's STS takes it).
func (f *Fake) exchange(w http.ResponseWriter, r *http.Request) {
	f.count("sts.token")
	if err := r.ParseForm(); err != nil {
		stsError(w, http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	f.mu.Lock()
	pool, poolAudience := f.pool, f.poolAudience
	f.mu.Unlock()
	switch {
	case r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
		stsError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type")
		return
	case r.PostForm.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt",
		r.PostForm.Get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token":
		stsError(w, http.StatusBadRequest, "invalid_request", "token types")
		return
	case pool == "" || r.PostForm.Get("audience") != pool:
		stsError(w, http.StatusBadRequest, "invalid_target", "The target service indicated by the \"audience\" parameters is invalid.")
		return
	}
	claims, ok := fakecloud.Parse(r.PostForm.Get("subject_token"))
	if !ok || claims.Sub == "" || !claims.HasAudience(poolAudience) {
		stsError(w, http.StatusBadRequest, "invalid_grant", "The audience in ID Token does not match the expected audience.")
		return
	}
	tok := f.issue(f.Subject(claims.Sub))
	writeJSON(w, map[string]any{"access_token": tok, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
		"token_type": "Bearer", "expires_in": int(f.tokenLifetime().Seconds())})
}

// generateAccessToken is projects/-/serviceAccounts/EMAIL:generateAccessToken.
func (f *Fake) generateAccessToken(w http.ResponseWriter, r *http.Request) {
	f.count("generateAccessToken")
	email, ok := strings.CutSuffix(r.PathValue("call"), ":generateAccessToken")
	principal, known := f.principal(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	f.mu.Lock()
	allowed := f.impersonators[principal+"\x00"+email]
	f.mu.Unlock()
	switch {
	case !ok:
		http.NotFound(w, r)
	case !known:
		w.WriteHeader(http.StatusUnauthorized)
		writeJSON(w, map[string]any{"error": map[string]any{"code": 401, "status": "UNAUTHENTICATED"}})
	case !allowed:
		w.WriteHeader(http.StatusForbidden)
		writeJSON(w, map[string]any{"error": map[string]any{"code": 403, "status": "PERMISSION_DENIED",
			"message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."}})
	default:
		writeJSON(w, map[string]any{"accessToken": f.issue("serviceAccount:" + email),
			"expireTime": time.Now().Add(f.tokenLifetime()).UTC().Format(time.RFC3339)})
	}
}

func stsError(w http.ResponseWriter, code int, kind, desc string) {
	w.WriteHeader(code)
	writeJSON(w, map[string]string{"error": kind, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, v any) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	json.NewEncoder(w).Encode(v)
}

// issue makes an access token of principal.
func (f *Fake) issue(principal string) string {
	b := make([]byte, 18)
	rand.Read(b)
	tok := "ya29.fake-" + base64.RawURLEncoding.EncodeToString(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[tok] = principal
	return tok
}

func (f *Fake) principal(tok string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.tokens[tok]
	return p, ok
}

func (f *Fake) count(method string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
}

// authorize checks a call's bearer token (over TLS only) against the
// grants for id ("" for the project).
func (f *Fake) authorize(ctx context.Context, id string) error {
	f.mu.Lock()
	check := f.checkTokens
	f.mu.Unlock()
	if !check {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var tok string
	if v := md.Get("authorization"); len(v) == 1 {
		tok, _ = strings.CutPrefix(v[0], "Bearer ")
	}
	principal, ok := f.principal(tok)
	if !ok {
		return status.Error(codes.Unauthenticated, "Request had invalid authentication credentials.")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if g := f.grants[principal]; g[""] || (id != "" && g[id]) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "Permission denied on resource (or it might not exist).")
}
