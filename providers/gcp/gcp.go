// Package gcp is the provider of Google Cloud Secret Manager secrets.
//
// A key is a secret's id in the one project the provider is given
// ("db-password"); ids hold letters, digits, "_" and "-", never "/", so the
// provider is one flat directory (labels are not paths). A version is a
// number or "latest" (the default); a disabled or destroyed version is not
// found, as is a secret or version that does not exist. Replicated and
// user-managed secrets read alike. The value is the payload's data, byte
// for byte, and its checksum (data_crc32c) is verified: a payload that does
// not match is an error, never served.
//
// Credentials are Application Default Credentials (GOOGLE_APPLICATION_
// CREDENTIALS, the metadata server, workload identity), found at the first
// call and again at each call until found: missing credentials, like
// rejected ones, are ErrUnavailable (they say nothing about the secret), so
// the cache serves the last good value. Endpoint points the client
// elsewhere; Insecure, with it, speaks plaintext gRPC and sends no
// credentials, for a local fake or an emulator, and is refused unless the
// endpoint is a loopback address.
//
// With Federation, the provider acts as a Kubernetes service account that a
// workload identity pool trusts: its token is exchanged at Google's STS for
// a federated access token, and that for a service account's token when
// the pool's principal impersonates one (golang's cloud.google.com/go/auth
// externalaccount does the exchange and caches the result until it ends).
// The pool provider's audience is the STS audience; where STS and the IAM
// credentials API are is the node's choice, never a class's.
//
// Errors are classified once, from the gRPC status: NotFound and
// FailedPrecondition (a disabled or destroyed version) are ErrNotFound;
// PermissionDenied is ErrPermission; Unauthenticated (our credentials),
// Unavailable, DeadlineExceeded, Internal and the rest are ErrUnavailable;
// ResourceExhausted (HTTP 429, quota) is ErrUnavailable and ErrThrottled.
// What the service documents as retryable (UNAVAILABLE, RESOURCE_EXHAUSTED)
// is tried twice more within half a second (see retries), always within
// the caller's deadline.
//
// Listing is one ListSecrets walk of the project, up to 25,000 names a page.
package gcp

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials/externalaccount"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/secretfs/secretfs/resolver"
)

// Name is the provider's name.
const Name = "gcp"

// pageSize is how many names a ListSecrets page asks for (the service's
// most).
const pageSize = 25000

var (
	secretID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)
	versionN = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
	project  = regexp.MustCompile(`^[a-z0-9][a-z0-9.:-]{0,127}$`)
)

// Config configures a Provider.
type Config struct {
	Project string // the project's id or number
	// Endpoint, when set, is HOST:PORT of the service.
	Endpoint string
	// Insecure speaks plaintext gRPC to Endpoint and sends no credentials;
	// only to a loopback address.
	Insecure bool
	// Options are more client options (tests).
	Options []option.ClientOption
	// Federation, when set, gives the provider a pod's own identity.
	Federation *Federation
	Logger     *slog.Logger
}

// Federation is a Kubernetes service account's Google identity through a
// workload identity pool.
type Federation struct {
	// Provider is the pool provider's name, the STS audience:
	// //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/ID.
	Provider string
	// ServiceAccount, when set, is the email of the service account the
	// pool's principal impersonates; otherwise the federated token itself
	// is used (direct resource access).
	ServiceAccount string
	// Token returns the service account's newest token.
	Token func() (string, error)
	// STSURL is the token exchange endpoint (DefaultSTSURL when empty);
	// IAMCredentialsURL the IAM credentials API's base (DefaultIAMCredentialsURL).
	STSURL, IAMCredentialsURL string
}

// Google's endpoints of the exchange.
const (
	DefaultSTSURL            = "https://sts.googleapis.com/v1/token"
	DefaultIAMCredentialsURL = "https://iamcredentials.googleapis.com"
	cloudPlatform            = "https://www.googleapis.com/auth/cloud-platform"
)

// credentials are f's credentials: checked now, exchanged at the first call.
func (f *Federation) credentials() (*auth.Credentials, error) {
	sts := cmp.Or(f.STSURL, DefaultSTSURL)
	opts := &externalaccount.Options{
		Audience:             f.Provider,
		SubjectTokenType:     "urn:ietf:params:oauth:token-type:jwt",
		TokenURL:             sts,
		Scopes:               []string{cloudPlatform},
		SubjectTokenProvider: subjectToken(f.Token),
		// The library logs tokens at debug level when
		// GOOGLE_SDK_GO_LOGGING_LEVEL says so: never.
		Logger: slog.New(slog.DiscardHandler),
	}
	if f.ServiceAccount != "" {
		base := strings.TrimRight(cmp.Or(f.IAMCredentialsURL, DefaultIAMCredentialsURL), "/")
		opts.ServiceAccountImpersonationURL = base + "/v1/projects/-/serviceAccounts/" + url.PathEscape(f.ServiceAccount) + ":generateAccessToken"
	}
	c, err := externalaccount.NewCredentials(opts)
	if err != nil {
		return nil, fmt.Errorf("gcp: workload identity %s: %s", f.Provider, firstLine(err))
	}
	return c, nil
}

// subjectToken is the pod's token as the exchange asks for it.
type subjectToken func() (string, error)

func (t subjectToken) SubjectToken(context.Context, *externalaccount.RequestOptions) (string, error) {
	return t()
}

// Provider reads secrets of one project. It is safe for concurrent use.
type Provider struct {
	cfg   Config
	log   *slog.Logger
	creds *auth.Credentials // a pod's (Federation), or nil

	mu     sync.Mutex
	client *secretmanager.Client // guarded by mu; made at the first call that can
}

// New checks cfg and returns a provider; the client is made at the first
// call (credentials may come later than the mount).
func New(cfg Config) (*Provider, error) {
	if !project.MatchString(cfg.Project) {
		return nil, fmt.Errorf("gcp: --gcp-project %q: want a project id or number", cfg.Project)
	}
	if cfg.Insecure {
		if cfg.Endpoint == "" {
			return nil, errors.New("gcp: --gcp-insecure needs --gcp-endpoint")
		}
		if !Loopback(cfg.Endpoint) {
			return nil, fmt.Errorf("gcp: --gcp-insecure: %s is not a loopback address: plaintext is only for a local fake or emulator", cfg.Endpoint)
		}
	}
	var creds *auth.Credentials
	if cfg.Federation != nil {
		if cfg.Insecure {
			return nil, fmt.Errorf("gcp: %w: this node speaks plaintext to Secret Manager (--gcp-insecure), and a pod's identity is never sent over it", resolver.ErrPermission)
		}
		c, err := cfg.Federation.credentials()
		if err != nil {
			return nil, err
		}
		creds = c
		cfg.Options = append(slices.Clip(cfg.Options), option.WithAuthCredentials(c))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Insecure {
		log.Warn("gcp: plaintext gRPC to a local endpoint, no credentials sent (--gcp-insecure)", "endpoint", cfg.Endpoint)
	}
	return &Provider{cfg: cfg, log: log, creds: creds}, nil
}

// Loopback reports whether HOST:PORT names a loopback address (an IP, or
// localhost).
func Loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Name implements resolver.Provider.
func (p *Provider) Name() string { return Name }

// Close closes the client.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client.Close()
	}
	return nil
}

// api returns the client, made now if it was not yet.
func (p *Provider) api(ctx context.Context) (*secretmanager.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, nil
	}
	// The library logs requests and responses, payloads included, at
	// debug level when GOOGLE_SDK_GO_LOGGING_LEVEL says so: never.
	opts := append([]option.ClientOption{option.WithLogger(slog.New(slog.DiscardHandler))}, p.cfg.Options...)
	if p.cfg.Insecure {
		conn, err := grpc.NewClient(p.cfg.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("gcp: %w: %v", resolver.ErrUnavailable, err)
		}
		opts = append(opts, option.WithGRPCConn(conn), option.WithoutAuthentication())
	} else if p.cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(p.cfg.Endpoint))
	}
	c, err := secretmanager.NewClient(ctx, opts...)
	if err != nil {
		// No credentials (yet): nothing about any secret.
		return nil, fmt.Errorf("gcp: %w: no client: %s", resolver.ErrUnavailable, firstLine(err))
	}
	p.client = c
	return c, nil
}

// Get implements resolver.Provider.
func (p *Provider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	if !secretID.MatchString(key) {
		return resolver.Secret{}, fmt.Errorf("gcp %s: %w (not a secret id)", key, resolver.ErrNotFound)
	}
	switch {
	case version == "":
		version = "latest"
	case version == "latest" || versionN.MatchString(version):
	default:
		return resolver.Secret{}, fmt.Errorf("gcp %s@%s: %w (a version is a number or latest)", key, version, resolver.ErrNotFound)
	}
	if err := p.exchange(ctx); err != nil {
		return resolver.Secret{}, err
	}
	c, err := p.api(ctx)
	if err != nil {
		return resolver.Secret{}, err
	}
	name := "projects/" + p.cfg.Project + "/secrets/" + key + "/versions/" + version
	out, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name}, retries())
	if err != nil {
		return resolver.Secret{}, p.mapError("AccessSecretVersion", key, err)
	}
	data := out.GetPayload().GetData()
	if sum := out.GetPayload().DataCrc32C; sum != nil && int64(crc32.Checksum(data, castagnoli)) != *sum {
		p.log.Error("gcp payload checksum mismatch: not served", "secret", key)
		return resolver.Secret{}, fmt.Errorf("gcp %s: %w: the payload does not match its checksum", key, resolver.ErrUnavailable)
	}
	v := out.GetName()
	if i := strings.LastIndexByte(v, '/'); i >= 0 {
		v = v[i+1:]
	}
	return resolver.Secret{Value: data, Version: v}, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// List implements resolver.Lister: the project's secrets, at the top;
// nothing is below a name.
func (p *Provider) List(ctx context.Context, dir string) ([]string, error) {
	if dir != "" {
		return nil, fmt.Errorf("gcp %s/: %w (secret ids hold no /)", dir, resolver.ErrNotFound)
	}
	if err := p.exchange(ctx); err != nil {
		return nil, err
	}
	c, err := p.api(ctx)
	if err != nil {
		return nil, err
	}
	it := c.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: "projects/" + p.cfg.Project, PageSize: pageSize}, retries())
	var names []string
	for {
		s, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return names, nil
		}
		if err != nil {
			return nil, p.mapError("ListSecrets", "", err)
		}
		n := s.GetName()
		if i := strings.LastIndexByte(n, '/'); i >= 0 {
			n = n[i+1:]
		}
		names = append(names, n)
	}
}

// exchange makes sure a pod's identity has a Google token (cached until it
// ends; exchanged again then), so that a refusal is told apart from an
// outage: the pod's token or its binding refused (HTTP 400, 401, 403 from
// STS or the IAM credentials API) is ErrPermission, and the cache then
// stops serving what that identity read; anything else is ErrUnavailable.
// The error says the status and the OAuth error code, never the body (an
// endpoint may echo what it was sent).
func (p *Provider) exchange(ctx context.Context) error {
	if p.creds == nil {
		return nil
	}
	_, err := p.creds.Token(ctx)
	if err == nil {
		return nil
	}
	switch code, body := exchangeStatus(err); {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("gcp workload identity: %w", err)
	case code == http.StatusBadRequest || code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("gcp workload identity: %w: the token exchange was refused (HTTP %d %s)", resolver.ErrPermission, code, oauthError(body))
	case code != 0:
		return fmt.Errorf("gcp workload identity: %w: the token exchange failed (HTTP %d)", resolver.ErrUnavailable, code)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("gcp workload identity: %w: the token exchange timed out", resolver.ErrUnavailable)
	}
	return fmt.Errorf("gcp workload identity: %w: the token exchange could not be made", resolver.ErrUnavailable)
}

var (
	oauthCode = regexp.MustCompile(`^[A-Za-z_]{1,64}$`)
	// statusText is how the library's STS and impersonation calls say an
	// answer that is not 200 ("credentials: status code 403: BODY").
	statusText = regexp.MustCompile(`(?s)^(?:credentials|impersonate): status code ([1-5][0-9][0-9]): (.*)$`)
)

// exchangeStatus is the HTTP status and body of a refused or failed
// exchange, from the text the library makes of an answer that is not 200
// (its STS and impersonation calls return no typed error); 0 when the
// error holds none (a transport error).
func exchangeStatus(err error) (int, []byte) {
	m := statusText.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, nil
	}
	code, _ := strconv.Atoi(m[1])
	return code, []byte(m[2])
}

// oauthError is the error code of an OAuth or Google API error body
// ({"error":"invalid_grant"}, {"error":{"status":"PERMISSION_DENIED"}}),
// or "" when it has none that looks like one.
func oauthError(body []byte) string {
	var b struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &b) != nil {
		return ""
	}
	var code string
	if json.Unmarshal(b.Error, &code) != nil {
		var obj struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(b.Error, &obj) == nil {
			code = obj.Status
		}
	}
	if !oauthCode.MatchString(code) {
		return ""
	}
	return code
}

// retries replaces the library's retries (every UNAVAILABLE until the
// deadline) with two more tries, 100 ms and 300 ms later, of what the
// service documents as retryable: an outage is then known within half a
// second, not a whole --timeout, and the engine's own back-off and stale
// rules take over.
func retries() gax.CallOption {
	return gax.WithRetry(func() gax.Retryer { return &retryer{} })
}

type retryer struct{ n int }

func (r *retryer) Retry(err error) (time.Duration, bool) {
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted:
	default:
		return 0, false
	}
	r.n++
	switch r.n {
	case 1:
		return 100 * time.Millisecond, true
	case 2:
		return 300 * time.Millisecond, true
	}
	return 0, false
}

// mapError classifies an error of the client (see the package doc).
func (p *Provider) mapError(op, key string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("gcp %s %s: %w", op, key, err)
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("gcp %s %s: %w: timed out", op, key, resolver.ErrUnavailable)
		}
		return fmt.Errorf("gcp %s %s: %w: %s", op, key, resolver.ErrUnavailable, firstLine(err))
	}
	switch st.Code() {
	case codes.NotFound, codes.FailedPrecondition, codes.InvalidArgument:
		return fmt.Errorf("gcp %s: %w (%s)", key, resolver.ErrNotFound, st.Code())
	case codes.PermissionDenied:
		return fmt.Errorf("gcp %s %s: %w", op, key, resolver.ErrPermission)
	case codes.ResourceExhausted:
		return fmt.Errorf("gcp %s %s: %w: %w (%s)", op, key, resolver.ErrUnavailable, resolver.ErrThrottled, st.Code())
	case codes.Unauthenticated:
		return fmt.Errorf("gcp %s %s: %w: credentials rejected", op, key, resolver.ErrUnavailable)
	case codes.Canceled:
		return fmt.Errorf("gcp %s %s: %w", op, key, context.Canceled)
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.Aborted:
		return fmt.Errorf("gcp %s %s: %w: %s", op, key, resolver.ErrUnavailable, st.Code())
	}
	p.log.Error("gcp service error", "operation", op, "secret", key, "code", st.Code().String())
	return fmt.Errorf("gcp %s %s: service error %s", op, key, st.Code())
}

// firstLine is the first line of an error's text, cut short: a library's
// errors can be long.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
