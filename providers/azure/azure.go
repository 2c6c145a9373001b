// Package azure is the provider of Azure Key Vault secrets.
//
// A key is a secret's name in the one vault the provider is given
// ("db-password"): names hold letters, digits and "-", never "/", so the
// provider is one flat directory. A version is a version id (32 hex
// digits) or "latest" (the default: the current version).
//
// Key Vault's names are case-insensitive: DB-Password and db-password are
// one secret. A secret is served only under the spelling the service
// lists, and any other spelling is not found, so that no spelling gets
// around a path rule: Get compares the name with the provider's latest
// listing (listing again at most once per ListTTL when the name is not in
// it, or is there under another spelling) and with the name the service
// returns. A vault that denies listing therefore serves nothing.
//
// A disabled secret, an expired one (exp) and one not yet valid (nbf) are
// not served, and not listed: they are not found; a version given
// explicitly is served if that version is valid (a rollback to the last
// good version while the current one is staged). A value with an expiry
// is neither fresh nor stale past it (Secret.NotAfter). A deleted secret is not
// found. Secret values are strings; the value is served byte for byte.
//
// Credentials are azidentity.DefaultAzureCredential unless Config gives
// one (a pod's own identity): environment, workload identity, managed
// identity, Azure CLI, with the environment it honours
// (AZURE_AUTHORITY_HOST for a private cloud) and the system's trusted
// certificates (SSL_CERT_FILE). The SDK's bearer-challenge exchange checks
// that the challenge's resource belongs to the vault's domain. Missing
// credentials, like rejected ones, are ErrUnavailable.
//
// Errors are classified once, from the HTTP status: 404 (and 403
// SecretDisabled) is ErrNotFound, 403 ErrPermission, 401 (our credentials)
// and 5xx ErrUnavailable, 429 ErrUnavailable and ErrThrottled, a
// credential's failure and a transport error ErrUnavailable. The SDK's
// retries are bounded to two more tries within about half a second, as
// for the other providers: an outage is known at once, and the engine's
// back-off and stale rules take over.
//
// Listing pages hold 25 names (the service's most).
package azure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azlog "github.com/Azure/azure-sdk-for-go/sdk/azcore/log"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"golang.org/x/sync/singleflight"

	"github.com/secretfs/secretfs/resolver"
)

// Name is the provider's name.
const Name = "azure"

var (
	secretName = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	versionID  = regexp.MustCompile(`^[0-9a-f]{32}$`)
	vaultName  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$`)
)

// Config configures a Provider.
type Config struct {
	// Vault is the vault's name (in Azure's public cloud,
	// https://NAME.vault.azure.net) or its https URL.
	Vault string
	// Credential, when set, replaces DefaultAzureCredential.
	Credential azcore.TokenCredential
	// PodIdentity says Credential is a pod's own (csi-provider): Entra ID
	// refusing it (HTTP 400, 401, 403: no federated credential matches,
	// the application is gone) is ErrPermission, so that what it read is
	// no longer served; the node's credentials refused are an outage.
	PodIdentity bool
	// ListTTL bounds how old a listing Get trusts for a name's spelling
	// (default 5 s): a name missing from a listing is looked for again at
	// most that often.
	ListTTL time.Duration
	Logger  *slog.Logger
}

// Provider reads the secrets of one vault. It is safe for concurrent use.
type Provider struct {
	url string
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	client   *azsecrets.Client // guarded by mu; made at the first call
	spelling map[string]string // guarded by mu; every listed name by lower case, from the latest walk
	served   []string          // guarded by mu; the names the latest walk found servable
	listedAt time.Time         // guarded by mu; when the latest walk ended
	walkTook time.Duration     // guarded by mu; how long it took

	walks singleflight.Group // the walk in flight, which overlapping calls share
}

// VaultURL is the URL of vault, a name or an https URL.
func VaultURL(vault string) (string, error) {
	if vaultName.MatchString(vault) {
		return "https://" + strings.ToLower(vault) + ".vault.azure.net/", nil
	}
	u, err := url.Parse(vault)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("azure: --azure-vault %q: want a vault name (3 to 24 letters, digits and -) or its https URL such as https://NAME.vault.azure.net", vault)
	}
	return "https://" + strings.ToLower(u.Host) + "/", nil
}

// New checks cfg and returns a provider; the credential is asked for a
// token at the first call.
func New(cfg Config) (*Provider, error) {
	// The SDK logs every request, and Entra ID's answers, to stderr when
	// AZURE_SDK_GO_LOGGING=all: never in secretfs.
	azlog.SetListener(nil)
	u, err := VaultURL(cfg.Vault)
	if err != nil {
		return nil, err
	}
	if cfg.ListTTL <= 0 {
		cfg.ListTTL = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{url: u, cfg: cfg, log: log}, nil
}

// Name implements resolver.Provider.
func (p *Provider) Name() string { return Name }

// URL is the vault's URL.
func (p *Provider) URL() string { return p.url }

// api returns the client, made now if it was not yet.
func (p *Provider) api() (*azsecrets.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, nil
	}
	cred := p.cfg.Credential
	if cred == nil {
		c, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("azure: %w: no credential: %s", resolver.ErrUnavailable, firstLine(err))
		}
		cred = c
	}
	c, err := azsecrets.NewClient(p.url, cred, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{
		Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: 100 * time.Millisecond, MaxRetryDelay: 300 * time.Millisecond,
			StatusCodes: []int{http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
				http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}},
		Logging: policy.LogOptions{IncludeBody: false},
	}})
	if err != nil {
		return nil, fmt.Errorf("azure: %w: no client: %s", resolver.ErrUnavailable, firstLine(err))
	}
	p.client = c
	return c, nil
}

// Get implements resolver.Provider.
func (p *Provider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	if !secretName.MatchString(key) {
		return resolver.Secret{}, fmt.Errorf("azure %s: %w (not a secret name)", key, resolver.ErrNotFound)
	}
	switch {
	case version == "" || version == "latest":
		version = ""
	case versionID.MatchString(version):
	default:
		return resolver.Secret{}, fmt.Errorf("azure %s@%s: %w (a version is 32 hex digits or latest)", key, version, resolver.ErrNotFound)
	}
	if err := p.spelledAsListed(ctx, key); err != nil {
		return resolver.Secret{}, err
	}
	c, err := p.api()
	if err != nil {
		return resolver.Secret{}, err
	}
	out, err := c.GetSecret(ctx, key, version, nil)
	if err != nil {
		return resolver.Secret{}, p.mapError(opGet, key, err)
	}
	if out.ID == nil || out.Value == nil {
		return resolver.Secret{}, fmt.Errorf("azure %s: %w: the service answered without an id or a value", key, resolver.ErrUnavailable)
	}
	if n := out.ID.Name(); n != key {
		// The listing is behind (a rename): the next read lists again.
		p.mu.Lock()
		p.listedAt = time.Time{}
		p.mu.Unlock()
		return resolver.Secret{}, fmt.Errorf("azure %s: %w (the vault spells it otherwise)", key, resolver.ErrNotFound)
	}
	if why := unservable(out.Attributes, time.Now()); why != "" {
		return resolver.Secret{}, fmt.Errorf("azure %s: %w (%s)", key, resolver.ErrNotFound, why)
	}
	sec := resolver.Secret{Value: []byte(*out.Value), Version: out.ID.Version()}
	if a := out.Attributes; a != nil && a.Expires != nil {
		// Neither fresh nor served stale in an outage past its expiry.
		sec.NotAfter = *a.Expires
	}
	if a := out.Attributes; a != nil && a.Created != nil {
		sec.Created = *a.Created
	}
	return sec, nil
}

// unservable says why a secret with attrs is not served at now, or "".
func unservable(attrs *azsecrets.SecretAttributes, now time.Time) string {
	switch {
	case attrs == nil:
		return ""
	case attrs.Enabled != nil && !*attrs.Enabled:
		return "disabled"
	case attrs.Expires != nil && !now.Before(*attrs.Expires):
		return "expired"
	case attrs.NotBefore != nil && now.Before(*attrs.NotBefore):
		return "not yet valid"
	}
	return ""
}

// spelledAsListed checks key against the latest walk, walking again when
// the name is not in it, or under another spelling (a rename), and the
// walk is older than ListTTL. Every listed name counts, servable or not: a
// version of it may be (a rollback to the last good version).
func (p *Provider) spelledAsListed(ctx context.Context, key string) error {
	lower := strings.ToLower(key)
	p.mu.Lock()
	listed, ok := p.spelling[lower]
	fresh := time.Since(p.listedAt) < p.cfg.ListTTL
	p.mu.Unlock()
	if (!ok || listed != key) && !fresh {
		if _, err := p.walkNow(ctx); err != nil {
			if errors.Is(err, errListDenied) {
				return fmt.Errorf("azure %s: %w: the vault denies this identity listing, which secretfs needs to check a name's spelling "+
					"(grant Key Vault Secrets User, which has it; an access policy needs list as well as get)", key, resolver.ErrPermission)
			}
			return err
		}
		p.mu.Lock()
		listed, ok = p.spelling[lower]
		p.mu.Unlock()
	}
	switch {
	case !ok:
		return fmt.Errorf("azure %s: %w", key, resolver.ErrNotFound)
	case listed != key:
		return fmt.Errorf("azure %s: %w (the vault lists it as another spelling)", key, resolver.ErrNotFound)
	}
	return nil
}

// List implements resolver.Lister: the vault's secrets that are served,
// at the top; nothing is below a name. Walks that overlap share one, and
// a slow vault's walk serves as long as it took (whoever gave up waiting
// for it finds it then).
func (p *Provider) List(ctx context.Context, dir string) ([]string, error) {
	if dir != "" {
		return nil, fmt.Errorf("azure %s/: %w (secret names hold no /)", dir, resolver.ErrNotFound)
	}
	p.mu.Lock()
	if p.served != nil && p.walkTook > time.Second && time.Since(p.listedAt) < p.walkTook {
		names := slices.Clone(p.served)
		p.mu.Unlock()
		return names, nil
	}
	p.mu.Unlock()
	return p.walkNow(ctx)
}

// walkNow joins the walk in flight or starts one, and waits for it within
// ctx.
func (p *Provider) walkNow(ctx context.Context) ([]string, error) {
	ch := p.walks.DoChan("walk", p.walk)
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return slices.Clone(r.Val.([]string)), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("azure list: %w: %w", resolver.ErrUnavailable, ctx.Err())
	}
}

// walkTimeout bounds a listing walk, which runs on when its waiters have
// given up: at 25 names a page, some 10,000 names at 300 ms a page.
const walkTimeout = 2 * time.Minute

// walk lists the vault, under its own budget (a waiter's deadline bounds
// only its wait), records the spellings and returns the servable names.
func (p *Provider) walk() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), walkTimeout)
	defer cancel()
	began := time.Now()
	all, err := p.walkPages(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spelling = make(map[string]string, len(all))
	p.served = p.served[:0:0]
	for _, n := range all {
		p.spelling[strings.ToLower(n.name)] = n.name
		if n.servable {
			p.served = append(p.served, n.name)
		}
	}
	p.listedAt = time.Now()
	p.walkTook = p.listedAt.Sub(began)
	return p.served, nil
}

// listed is a name a walk found.
type listed struct {
	name     string
	servable bool // its current version is enabled and within its dates
}

func (p *Provider) walkPages(ctx context.Context) ([]listed, error) {
	c, err := p.api()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var names []listed
	pager := c.NewListSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, p.mapError(opList, "", err)
		}
		for _, s := range page.Value {
			if s == nil || s.ID == nil {
				continue
			}
			if n := s.ID.Name(); secretName.MatchString(n) {
				names = append(names, listed{n, unservable(s.Attributes, now) == ""})
			}
		}
	}
	return names, nil
}

// The operations mapError tells apart.
const (
	opGet  = "GetSecret"
	opList = "ListSecretProperties"
)

// errListDenied is Key Vault's 403 to a listing, which the spelling check
// needs: told apart from Entra ID refusing an identity.
var errListDenied = errors.New("the vault denies listing")

// mapError classifies an error of the client (see the package doc).
func (p *Provider) mapError(op, key string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("azure %s %s: %w", op, key, err)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		switch code := re.StatusCode; {
		case code == http.StatusNotFound:
			return fmt.Errorf("azure %s: %w", key, resolver.ErrNotFound)
		case code == http.StatusForbidden && strings.EqualFold(innerCode(re), "SecretDisabled"):
			return fmt.Errorf("azure %s: %w (disabled)", key, resolver.ErrNotFound)
		case code == http.StatusForbidden && op == opList:
			return fmt.Errorf("azure %s: %w: %w", op, resolver.ErrPermission, errListDenied)
		case code == http.StatusForbidden:
			return fmt.Errorf("azure %s %s: %w", op, key, resolver.ErrPermission)
		case code == http.StatusUnauthorized:
			return fmt.Errorf("azure %s %s: %w: credentials rejected", op, key, resolver.ErrUnavailable)
		case code == http.StatusTooManyRequests:
			return fmt.Errorf("azure %s %s: %w: %w (429)", op, key, resolver.ErrUnavailable, resolver.ErrThrottled)
		case code >= 500 || code == http.StatusRequestTimeout:
			return fmt.Errorf("azure %s %s: %w: HTTP %d", op, key, resolver.ErrUnavailable, code)
		case code == http.StatusBadRequest && op == opGet:
			// A name or version the service refuses: nothing there.
			return fmt.Errorf("azure %s: %w (%s)", key, resolver.ErrNotFound, re.ErrorCode)
		}
		p.log.Error("azure service error", "operation", op, "secret", key, "status", re.StatusCode, "code", re.ErrorCode)
		return fmt.Errorf("azure %s %s: service error HTTP %d", op, key, re.StatusCode)
	}
	var auth *azidentity.AuthenticationFailedError
	if errors.As(err, &auth) {
		if r := auth.RawResponse; p.cfg.PodIdentity && r != nil &&
			(r.StatusCode == http.StatusBadRequest || r.StatusCode == http.StatusUnauthorized || r.StatusCode == http.StatusForbidden) {
			return fmt.Errorf("azure %s %s: %w: Entra ID refused the pod's identity (HTTP %d)", op, key, resolver.ErrPermission, r.StatusCode)
		}
		return fmt.Errorf("azure %s %s: %w: credentials rejected", op, key, resolver.ErrUnavailable)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("azure %s %s: %w: timed out", op, key, resolver.ErrUnavailable)
	}
	// No credential found, refused connections, TLS, DNS: nothing about
	// the secret.
	return fmt.Errorf("azure %s %s: %w: %s", op, key, resolver.ErrUnavailable, firstLine(err))
}

// innerCode is the innermost error code of a Key Vault error body
// ({"error":{"code":"Forbidden","innererror":{"code":"SecretDisabled"}}}).
func innerCode(re *azcore.ResponseError) string {
	if re.RawResponse == nil || re.RawResponse.Body == nil {
		return ""
	}
	// ResponseError has read the body; the SDK keeps it readable.
	var body struct {
		Error struct {
			Code  string `json:"code"`
			Inner *struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if json.NewDecoder(io.LimitReader(re.RawResponse.Body, 64<<10)).Decode(&body) != nil || body.Error.Inner == nil {
		return ""
	}
	return body.Error.Inner.Code
}

// firstLine is the first line of an error's text, cut short: the SDK's
// errors are long, and list every credential it tried.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
