// Package vault is the provider of HashiCorp Vault secrets.
//
// A key is a path "MOUNT/PATH": "secret/myapp" is the secret myapp in the
// KV mount secret/. For each mount the provider asks Vault, the way the
// Vault CLI does (sys/internal/ui/mounts/PATH), which engine and which KV
// version it is, and remembers the answer: KV v2 paths get data/ (reads) and
// metadata/ (lists) added, and a version ("@3") selects a KV v2 version. A
// secret's file content is its data as a JSON object with sorted keys; fields
// ("#password") are cut from it by the resolver. Other engines are read with
// a plain logical read and shown as the response's data. Where the response
// carries a lease (a dynamic secret: database/creds/ROLE), the value is the
// lease's (resolver.Lease): the engine renews it through Renew while it is
// read, replaces it ahead of its end and never serves it past that; other
// answers with a lease duration are not cached past it.
//
// Authentication is one of: a token (VAULT_TOKEN, a token file,
// ~/.vault-token); AppRole (role id and secret id files); Kubernetes or JWT
// (a role and a JWT file, read afresh at every login because projected
// service account tokens rotate). A renewable token is renewed in the
// background by the api's lifetime watcher. When a token can no longer be
// renewed, or Vault says it is no longer valid, the provider logs in again
// and retries the read once, so a reader does not see the gap. Tokens,
// secret ids and JWTs never reach a log or an error.
//
// Errors: 404 (and Logical().Read's nil, nil) is resolver.ErrNotFound, so
// is a deleted or destroyed KV v2 version; 403 is resolver.ErrPermission;
// sealed, 5xx, 429, refused connections and timeouts are
// resolver.ErrUnavailable.
package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"golang.org/x/sync/singleflight"

	"github.com/secretfs/secretfs/resolver"
)

// Name is the provider's name in references.
const Name = "vault"

// Auth methods.
const (
	AuthToken      = "token"
	AuthAppRole    = "approle"
	AuthKubernetes = "kubernetes"
	AuthJWT        = "jwt"
)

// DefaultKubernetesJWT is where Kubernetes mounts a pod's service account token.
const DefaultKubernetesJWT = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// Config configures New. Address, TLS and namespace come from the standard
// VAULT_* variables (api.DefaultConfig) unless set here.
type Config struct {
	Address                  string
	Namespace                string
	Auth                     string // token (default), approle, kubernetes, jwt
	AuthMount                string // default: the method's name
	TokenFile                string
	RoleIDFile, SecretIDFile string
	Role                     string
	JWTFile                  string
	// JWT, when set, gives the JWT of kubernetes and jwt auth instead of
	// JWTFile; it is called at every login (a Kubernetes pod's current
	// service-account token, say).
	JWT func() (string, error)
	// Mounts, when set, are the mounts listed at the top instead of asking
	// Vault (for tokens that may not list mounts).
	Mounts []string
	// RevokeOnExit revokes, at Close, the leases this provider took that
	// have not ended (--vault-revoke-on-exit); by default they are left to
	// expire.
	RevokeOnExit bool
	// Issue are the issuing writes of the config file's vault-issue:,
	// shown by the provider Issued returns.
	Issue  []Issue
	Logger *slog.Logger
}

type mountInfo struct {
	path    string // "secret/"
	kvV2    bool
	isKV    bool
	checked time.Time // when Vault said so; trusted for mountTTL
}

// Provider reads Vault. It is safe for concurrent use.
type Provider struct {
	client *api.Client
	cfg    Config
	log    *slog.Logger

	mountsMu sync.Mutex
	mounts   map[string]mountInfo // guarded by mountsMu; by mount path ("secret/")

	logins singleflight.Group // collapses concurrent logins into one
	// ctx is canceled by Close; logins and renewals run under it, not
	// under a reader's context, so that no reader's cancellation ends them.
	ctx    context.Context
	cancel context.CancelFunc

	// authed is set by the first login that succeeds. Until then a read
	// logs in first, and is unavailable if it cannot: the client holds no
	// token of this provider's.
	authed atomic.Bool

	leasesMu sync.Mutex
	taken    map[string]time.Time // guarded by leasesMu; lease id → end, of leases this provider took

	bgMu      sync.Mutex
	stopWatch func()         // guarded by bgMu; stops the current token watcher
	closed    bool           // guarded by bgMu; set by Close: no new background work
	wg        sync.WaitGroup // background goroutines; Add only under bgMu while !closed
}

// loginTimeout bounds a login that no reader waits for.
const loginTimeout = 30 * time.Second

// mountTTL is how long what Vault said of a mount (engine, KV version) is
// trusted before it is asked again.
const mountTTL = 5 * time.Minute

// New connects and authenticates. ctx bounds the first login.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	vc := api.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault: configuration: %w", vc.Error)
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	// Retries fit well inside a call's budget: a refused connection costs
	// milliseconds, and the cache's probe, not the client, waits out a
	// longer outage.
	vc.MaxRetries = 1
	vc.MinRetryWait = 50 * time.Millisecond
	vc.MaxRetryWait = 200 * time.Millisecond
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: client: %w", err)
	}
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	if cfg.Auth != "" && cfg.Auth != AuthToken {
		// The client took VAULT_TOKEN from the environment; a provider that
		// logs in must never send it anywhere (another identity's Vault).
		client.ClearToken()
	}
	if cfg.Auth == "" {
		cfg.Auth = AuthToken
	}
	if cfg.AuthMount == "" {
		cfg.AuthMount = cfg.Auth
	}
	if cfg.Auth == AuthKubernetes && cfg.JWTFile == "" && cfg.JWT == nil {
		cfg.JWTFile = DefaultKubernetesJWT
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Provider{client: client, cfg: cfg, log: log, mounts: make(map[string]mountInfo)}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if err := p.checkAuthConfig(); err != nil {
		p.cancel()
		return nil, err
	}
	if err := p.login(ctx); err != nil {
		if !errors.Is(err, resolver.ErrUnavailable) {
			p.Close()
			return nil, err
		}
		// Vault is down or sealed: serve what can be served (reads fail
		// with EIO) and keep trying to log in, as Vault Agent does.
		log.Warn("vault: unavailable at start; logging in in the background", "error", err)
		p.background(p.relogin)
	}
	return p, nil
}

// background runs f in a goroutine that Close waits for, unless the
// provider is closed already.
func (p *Provider) background(f func()) {
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	if p.closed {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

// took notes a lease this provider took, for RevokeOnExit; ended ones are
// forgotten, so that what is kept is bounded by the leases alive.
func (p *Provider) took(id string, end time.Time) {
	if !p.cfg.RevokeOnExit || id == "" {
		return
	}
	now := time.Now()
	p.leasesMu.Lock()
	defer p.leasesMu.Unlock()
	if p.taken == nil {
		p.taken = make(map[string]time.Time)
	}
	for l, e := range p.taken {
		if !now.Before(e) {
			delete(p.taken, l)
		}
	}
	p.taken[id] = end
}

// revokeTaken revokes the leases this provider took that have not ended,
// within revokeTimeout in all.
func (p *Provider) revokeTaken() {
	p.leasesMu.Lock()
	var ids []string
	now := time.Now()
	for id, end := range p.taken {
		if now.Before(end) {
			ids = append(ids, id)
		}
	}
	p.taken = nil
	p.leasesMu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	failed := 0
	for _, id := range ids {
		if err := p.client.Sys().RevokeWithContext(ctx, id); err != nil {
			failed++
		}
	}
	p.log.Info("vault: revoked the leases this process took (--vault-revoke-on-exit)", "revoked", len(ids)-failed, "failed", failed)
}

// revokeTimeout bounds the revocations at Close.
const revokeTimeout = 10 * time.Second

// Close stops token renewal and background logins, and waits for them.
// With RevokeOnExit it first revokes the leases it took.
func (p *Provider) Close() error {
	p.bgMu.Lock()
	p.closed = true
	if p.stopWatch != nil {
		p.stopWatch()
		p.stopWatch = nil
	}
	p.bgMu.Unlock()
	if p.cfg.RevokeOnExit {
		p.revokeTaken()
	}
	p.cancel()
	p.wg.Wait()
	return nil
}

// Name implements resolver.Provider.
func (p *Provider) Name() string { return Name }

func (p *Provider) checkAuthConfig() error {
	switch p.cfg.Auth {
	case AuthToken:
	case AuthAppRole:
		if p.cfg.RoleIDFile == "" || p.cfg.SecretIDFile == "" {
			return errors.New("vault: approle auth needs --vault-role-id-file and --vault-secret-id-file")
		}
	case AuthKubernetes, AuthJWT:
		if p.cfg.Role == "" {
			return fmt.Errorf("vault: %s auth needs --vault-role", p.cfg.Auth)
		}
		if p.cfg.JWTFile == "" && p.cfg.JWT == nil {
			return errors.New("vault: jwt auth needs --vault-jwt-file")
		}
	default:
		return fmt.Errorf("vault: unknown auth method %q (want token, approle, kubernetes or jwt)", p.cfg.Auth)
	}
	return nil
}

// brief is Vault's error messages, shortened and printable: what answers at
// an address may not be Vault, and its body is no one's business.
func brief(msgs []string) string {
	s := strings.Join(msgs, "; ")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// jwt is the JWT to log in with.
func (p *Provider) jwt() (string, error) {
	if p.cfg.JWT == nil {
		return readCredential("JWT", p.cfg.JWTFile)
	}
	jwt, err := p.cfg.JWT()
	if err == nil && jwt == "" {
		err = errors.New("vault: no JWT to log in with")
	}
	return jwt, err
}

// readCredential reads a file holding a credential, trimmed. The error
// names the file, never its content.
func readCredential(what, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("vault: read %s file: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("vault: %s file %s is empty", what, path)
	}
	return s, nil
}

// login gets a token with the configured method, sets it on the client and
// starts renewing it.
//
// Concurrent callers share one login. It runs under the provider's context
// (so Close ends it) with the first caller's deadline; each caller stops
// waiting when its own context ends.
func (p *Provider) login(ctx context.Context) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(loginTimeout)
	}
	ch := p.logins.DoChan("login", func() (any, error) {
		lctx, cancel := context.WithDeadline(p.ctx, deadline)
		defer cancel()
		secret, err := p.authenticate(lctx)
		if err != nil {
			return nil, err
		}
		p.authed.Store(true)
		if secret != nil && secret.Auth != nil && secret.Auth.Renewable {
			p.watch(secret)
		}
		return nil, nil
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return fmt.Errorf("vault login: %w", resolver.Unavailable(ctx.Err()))
	}
}

// authenticate sets a fresh token and returns what Vault said of it (nil
// for a token that cannot be looked up).
func (p *Provider) authenticate(ctx context.Context) (*api.Secret, error) {
	var body map[string]any
	switch p.cfg.Auth {
	case AuthToken:
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		p.client.SetToken(tok)
		self, err := p.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, p.mapError("token lookup", err)
		}
		ttl, _ := self.TokenTTL()
		renewable, _ := self.TokenIsRenewable()
		return &api.Secret{Auth: &api.SecretAuth{ClientToken: tok, Renewable: renewable && ttl > 0, LeaseDuration: int(ttl.Seconds())}}, nil
	case AuthAppRole:
		roleID, err := readCredential("role id", p.cfg.RoleIDFile)
		if err != nil {
			return nil, err
		}
		secretID, err := readCredential("secret id", p.cfg.SecretIDFile)
		if err != nil {
			return nil, err
		}
		body = map[string]any{"role_id": roleID, "secret_id": secretID}
	case AuthKubernetes, AuthJWT:
		jwt, err := p.jwt()
		if err != nil {
			return nil, err
		}
		body = map[string]any{"role": p.cfg.Role, "jwt": jwt}
	}
	// Log in without any (possibly revoked) token.
	lc, err := p.client.Clone()
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	lc.ClearToken()
	secret, err := lc.Logical().WriteWithContext(ctx, "auth/"+strings.Trim(p.cfg.AuthMount, "/")+"/login", body)
	if err != nil {
		// 400: the method refused these credentials (an unknown role, a
		// JWT whose claims the role does not accept): a denial.
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
			return nil, fmt.Errorf("vault: %s login at auth/%s refused: %w: %s", p.cfg.Auth, p.cfg.AuthMount, resolver.ErrPermission, brief(re.Errors))
		}
		return nil, fmt.Errorf("vault: %s login at auth/%s: %w", p.cfg.Auth, p.cfg.AuthMount, p.mapError("login", err))
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, fmt.Errorf("vault: %s login returned no token", p.cfg.Auth)
	}
	p.client.SetToken(secret.Auth.ClientToken)
	p.log.Info("vault: logged in", "method", p.cfg.Auth, "mount", p.cfg.AuthMount,
		"ttl", time.Duration(secret.Auth.LeaseDuration)*time.Second, "renewable", secret.Auth.Renewable)
	return secret, nil
}

// token finds the token for token auth: --vault-token-file, VAULT_TOKEN,
// then ~/.vault-token.
func (p *Provider) token() (string, error) {
	if p.cfg.TokenFile != "" {
		return readCredential("token", p.cfg.TokenFile)
	}
	if t := os.Getenv("VAULT_TOKEN"); t != "" {
		return t, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		if t, err := readCredential("token", filepath.Join(home, ".vault-token")); err == nil {
			return t, nil
		}
	}
	return "", errors.New("vault: no token: set VAULT_TOKEN, --vault-token-file or ~/.vault-token, or choose another --vault-auth")
}

// watch renews the token in the background; when it can be renewed no
// longer, it logs in again (retrying with backoff until Close). One watcher
// runs at a time: a new login stops the previous one.
func (p *Provider) watch(secret *api.Secret) {
	w, err := p.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		p.log.Warn("vault: cannot renew token", "error", err)
		return
	}
	quit := make(chan struct{})
	p.bgMu.Lock()
	if p.stopWatch != nil {
		p.stopWatch()
	}
	p.stopWatch = sync.OnceFunc(func() { close(quit) })
	p.bgMu.Unlock()
	p.background(func() {
		go w.Start()
		defer w.Stop()
		for {
			select {
			case <-p.ctx.Done():
				return
			case <-quit:
				return
			case r := <-w.RenewCh():
				p.log.Debug("vault: token renewed", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
			case err := <-w.DoneCh():
				select {
				case <-quit: // replaced by a newer login meanwhile
					return
				default:
				}
				if err != nil {
					p.log.Warn("vault: token renewal ended", "error", err)
				} else {
					p.log.Info("vault: token reached the end of its life; logging in again")
				}
				p.relogin()
				return
			}
		}
	})
}

// relogin logs in again until it succeeds or the provider is closed.
func (p *Provider) relogin() {
	backoff := time.Second
	for {
		ctx, cancel := context.WithTimeout(p.ctx, loginTimeout)
		err := p.login(ctx)
		cancel()
		if err == nil || p.ctx.Err() != nil {
			return
		}
		p.log.Warn("vault: login failed; retrying", "error", err, "in", backoff)
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// tokenInvalid reports whether Vault no longer accepts the current token
// (revoked or expired), as opposed to a policy that denies a path.
func (p *Provider) tokenInvalid(ctx context.Context) bool {
	_, err := p.client.Auth().Token().LookupSelfWithContext(ctx)
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden && deadTokenErrors(re.Errors)
}

// deadTokenErrors tells, from a 403's errors, a token Vault no longer
// accepts from a live token that a policy denies: Vault says "invalid token"
// (newer releases) or a bare "permission denied" (1.14) for the first, and
// wraps the second ("1 error occurred: * permission denied"). A token
// without the default policy may not look itself up, and is then not taken
// for dead.
func deadTokenErrors(errs []string) bool {
	for _, e := range errs {
		if strings.Contains(e, "invalid token") {
			return true
		}
	}
	return len(errs) == 1 && errs[0] == "permission denied"
}

// retryAfterRelogin runs call; when it is denied because the token is no
// longer valid (revoked, expired), it logs in again, unless another reader
// already did, and runs call once more.
func (p *Provider) retryAfterRelogin(ctx context.Context, call func() error) error {
	if !p.authed.Load() {
		// No login has worked yet (Vault was down at start): try now,
		// within this caller's deadline, sharing the background's attempt.
		if err := p.login(ctx); err != nil {
			return fmt.Errorf("vault: %w: not logged in yet: %v", resolver.ErrUnavailable, err)
		}
	}
	used := p.client.Token()
	err := call()
	if !errors.Is(err, resolver.ErrPermission) {
		return err
	}
	if p.client.Token() != used { // someone logged in again meanwhile
		return call()
	}
	if !p.tokenInvalid(ctx) {
		return err // a policy denies it
	}
	// From here on the token stopped working: that says nothing about the
	// secret, so it is unavailable, and a cached value is served.
	if p.cfg.Auth == AuthToken && p.cfg.TokenFile == "" {
		// A token from the environment cannot be replaced by logging in.
		return fmt.Errorf("vault: %w: the token is no longer valid", resolver.ErrUnavailable)
	}
	p.log.Info("vault: token no longer valid; logging in again")
	if lerr := p.login(ctx); lerr != nil {
		return fmt.Errorf("vault: %w: the token is no longer valid and logging in again failed: %v", resolver.ErrUnavailable, lerr)
	}
	return call()
}

// mapError maps api errors to the resolver's sentinels.
func (p *Provider) mapError(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("vault %s: %w", what, err)
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.StatusCode == http.StatusNotFound:
			return fmt.Errorf("vault %s: %w", what, resolver.ErrNotFound)
		case re.StatusCode == http.StatusForbidden:
			return fmt.Errorf("vault %s: %w", what, resolver.ErrPermission)
		case re.StatusCode == http.StatusMethodNotAllowed: // LIST on an engine without it
			return fmt.Errorf("vault %s: %w", what, errors.ErrUnsupported)
		case re.StatusCode == http.StatusTooManyRequests, re.StatusCode == http.StatusPreconditionFailed, re.StatusCode >= 500:
			return fmt.Errorf("vault %s: %w: HTTP %d", what, resolver.ErrUnavailable, re.StatusCode)
		}
		return fmt.Errorf("vault %s: HTTP %d: %s", what, re.StatusCode, strings.Join(re.Errors, "; "))
	}
	// No answer: connection refused, TLS, timeout.
	return fmt.Errorf("vault %s: %w: %w", what, resolver.ErrUnavailable, err)
}

// mountOf returns the mount that holds path, asking Vault once per mount.
func (p *Provider) mountOf(ctx context.Context, path string) (mountInfo, error) {
	if m, ok := p.knownMount(path); ok {
		return m, nil
	}
	var s *api.Secret
	err := p.retryAfterRelogin(ctx, func() error {
		var err error
		s, err = p.client.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+path)
		return p.mapError("mount of "+path, err)
	})
	if errors.Is(err, resolver.ErrPermission) && p.noSuchMount(ctx, path) {
		return mountInfo{}, fmt.Errorf("vault %s: %w (no mount)", path, resolver.ErrNotFound)
	}
	if err != nil {
		return mountInfo{}, err
	}
	if s == nil || s.Data == nil {
		return mountInfo{}, fmt.Errorf("vault %s: %w (no mount)", path, resolver.ErrNotFound)
	}
	m := infoOf(s.Data)
	if m.path == "" {
		return mountInfo{}, fmt.Errorf("vault %s: %w (no mount)", path, resolver.ErrNotFound)
	}
	p.mountsMu.Lock()
	p.mounts[m.path] = m
	p.mountsMu.Unlock()
	return m, nil
}

// noSuchMount reports whether no mount holds path, as far as a token that
// may read sys/mounts can tell. Vault answers 403 for a path under no mount
// at all; a token that can see every mount turns that into not-found, while
// for other tokens it stays permission denied (Vault does not say more).
func (p *Provider) noSuchMount(ctx context.Context, path string) bool {
	s, err := p.client.Logical().ReadWithContext(ctx, "sys/mounts")
	if err != nil || s == nil {
		return false
	}
	for mp := range s.Data {
		if strings.HasPrefix(path+"/", mp) {
			return false
		}
	}
	return true
}

func infoOf(d map[string]any) mountInfo {
	m := mountInfo{checked: time.Now()}
	m.path, _ = d["path"].(string)
	typ, _ := d["type"].(string)
	m.isKV = typ == "kv" || typ == "generic"
	if opts, ok := d["options"].(map[string]any); ok {
		v, _ := opts["version"].(string)
		m.kvV2 = m.isKV && v == "2"
	}
	return m
}

func (p *Provider) knownMount(path string) (mountInfo, bool) {
	p.mountsMu.Lock()
	defer p.mountsMu.Unlock()
	best := mountInfo{}
	now := time.Now()
	for mp, m := range p.mounts {
		if strings.HasPrefix(path+"/", mp) && len(mp) > len(best.path) && now.Sub(m.checked) < mountTTL {
			best = m
		}
	}
	return best, best.path != ""
}

// CheckHealth implements resolver.HealthChecker with sys/health, which needs
// no token: 200 (initialized, unsealed, active) is up. Every other answer
// (429 standby, 472 DR secondary, 473 performance standby, 501 not
// initialized, 503 sealed) and no answer mean this Vault does not serve
// reads: unavailable.
func (p *Provider) CheckHealth(ctx context.Context) error {
	r := p.client.NewRequest(http.MethodGet, "/v1/sys/health")
	//lint:ignore SA1019 the status code is the answer; Sys().Health maps it away
	resp, err := p.client.RawRequestWithContext(ctx, r) //nolint:staticcheck
	if resp != nil {
		defer resp.Body.Close()
	}
	if resp != nil && resp.StatusCode == http.StatusOK {
		return nil
	}
	if resp != nil {
		return fmt.Errorf("vault sys/health: %w: HTTP %d", resolver.ErrUnavailable, resp.StatusCode)
	}
	return fmt.Errorf("vault sys/health: %w: %w", resolver.ErrUnavailable, err)
}

// Get implements resolver.Provider.
func (p *Provider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	m, err := p.mountOf(ctx, key)
	if err != nil {
		return resolver.Secret{}, err
	}
	rest := strings.TrimPrefix(key, m.path)
	if rest == "" || rest == key {
		return resolver.Secret{}, fmt.Errorf("vault %s: %w (a mount, not a secret)", key, resolver.ErrNotFound)
	}
	var out resolver.Secret
	err = p.retryAfterRelogin(ctx, func() error {
		var err error
		switch {
		case m.kvV2:
			out, err = p.readKV2(ctx, m, key, rest, version)
		case version != "":
			err = fmt.Errorf("vault %s@%s: %w (only KV v2 has versions)", key, version, resolver.ErrNotFound)
		default:
			out, err = p.readPlain(ctx, key, m.isKV)
		}
		return err
	})
	return out, err
}

func (p *Provider) readKV2(ctx context.Context, m mountInfo, key, rest, version string) (resolver.Secret, error) {
	var q map[string][]string
	if version != "" {
		if n, err := strconv.Atoi(version); err != nil || n <= 0 {
			return resolver.Secret{}, fmt.Errorf("vault %s@%s: %w (a KV v2 version is a positive number)", key, version, resolver.ErrNotFound)
		}
		q = map[string][]string{"version": {version}}
	}
	s, err := p.client.Logical().ReadWithDataWithContext(ctx, m.path+"data/"+rest, q)
	if err != nil {
		return resolver.Secret{}, p.mapError("read "+key, err)
	}
	if s == nil || s.Data == nil {
		return resolver.Secret{}, fmt.Errorf("vault %s: %w", key, resolver.ErrNotFound)
	}
	data, _ := s.Data["data"].(map[string]any)
	meta, _ := s.Data["metadata"].(map[string]any)
	if data == nil { // a deleted or destroyed version
		return resolver.Secret{}, fmt.Errorf("vault %s: %w (deleted or destroyed version)", key, resolver.ErrNotFound)
	}
	value, err := marshalSorted(data)
	if err != nil {
		return resolver.Secret{}, fmt.Errorf("vault %s: %w", key, err)
	}
	out := resolver.Secret{Value: value}
	if meta != nil {
		out.Version = fmt.Sprint(meta["version"])
		if ct, ok := meta["created_time"].(string); ok {
			out.Created, _ = time.Parse(time.RFC3339Nano, ct)
		}
	}
	return out, nil
}

func (p *Provider) readPlain(ctx context.Context, key string, isKV bool) (resolver.Secret, error) {
	s, err := p.client.Logical().ReadWithContext(ctx, key)
	if err != nil {
		return resolver.Secret{}, p.mapError("read "+key, err)
	}
	if s == nil || s.Data == nil {
		return resolver.Secret{}, fmt.Errorf("vault %s: %w", key, resolver.ErrNotFound)
	}
	value, err := marshalSorted(s.Data)
	if err != nil {
		return resolver.Secret{}, fmt.Errorf("vault %s: %w", key, err)
	}
	out := resolver.Secret{Value: value}
	if !isKV {
		// A dynamic secret is made for this read and valid for its lease
		// (see Renew); other answers with a duration are not kept past it.
		if out.Lease = p.leaseOf(s); out.Lease == nil && s.LeaseDuration > 0 {
			out.MaxAge = time.Duration(s.LeaseDuration) * time.Second
		}
	}
	return out, nil
}

// leaseOf is the lease a response carries (nil for none), noted for
// RevokeOnExit.
func (p *Provider) leaseOf(s *api.Secret) *resolver.Lease {
	if s.LeaseID == "" || s.LeaseDuration <= 0 {
		return nil
	}
	now := time.Now()
	l := &resolver.Lease{ID: s.LeaseID, Start: now, Expires: now.Add(time.Duration(s.LeaseDuration) * time.Second), Renewable: s.Renewable}
	p.took(l.ID, l.Expires)
	return l
}

// Renew implements resolver.Renewer with sys/leases/renew, asking for the
// lease's current term again. Vault grants less once the lease nears its
// maximum TTL: the lease is then no longer renewable, and the engine
// fetches a new value ahead of its end. A lease Vault no longer knows, or
// will not renew (400), is not found.
func (p *Provider) Renew(ctx context.Context, lease resolver.Lease) (resolver.Lease, error) {
	want := max(int(lease.Term().Round(time.Second).Seconds()), 1)
	var s *api.Secret
	err := p.retryAfterRelogin(ctx, func() error {
		var err error
		s, err = p.client.Sys().RenewWithContext(ctx, lease.ID, want)
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
			return fmt.Errorf("vault renew: %w: the lease is gone or may not be renewed: %s", resolver.ErrNotFound, brief(re.Errors))
		}
		return p.mapError("renew", err)
	})
	if err != nil {
		return resolver.Lease{}, err
	}
	if s == nil || s.LeaseDuration <= 0 {
		return resolver.Lease{}, fmt.Errorf("vault renew: %w: no lease in the answer", resolver.ErrNotFound)
	}
	now := time.Now()
	got := time.Duration(s.LeaseDuration) * time.Second
	p.took(lease.ID, now.Add(got))
	return resolver.Lease{ID: lease.ID, Start: now, Expires: now.Add(got), Renewable: s.Renewable && s.LeaseDuration >= want}, nil
}

// marshalSorted encodes data as a compact JSON object with sorted keys
// (encoding/json sorts map keys).
func marshalSorted(data map[string]any) ([]byte, error) {
	return json.Marshal(data)
}

// List implements resolver.Lister.
func (p *Provider) List(ctx context.Context, dir string) ([]string, error) {
	if dir == "" {
		mounts, err := p.listMounts(ctx)
		if err != nil {
			return nil, err
		}
		return nextSegments(mounts, ""), nil
	}
	under := dir + "/"
	// A directory above some mounts ("team/" above "team/kv/"). Inside a
	// mount already known there is none (Vault does not nest mounts), so
	// the mounts need not be asked for again.
	if _, inside := p.knownMount(dir); !inside {
		if mounts, err := p.listMounts(ctx); err == nil {
			if above := nextSegments(mounts, under); len(above) > 0 {
				return above, nil
			}
		}
	}
	m, merr := p.mountOf(ctx, dir)
	if merr != nil {
		return nil, merr
	}
	rest := strings.TrimPrefix(under, m.path)
	path := m.path + rest
	if m.kvV2 {
		path = m.path + "metadata/" + rest
	}
	var s *api.Secret
	err := p.retryAfterRelogin(ctx, func() error {
		var err error
		s, err = p.client.Logical().ListWithContext(ctx, path)
		return p.mapError("list "+dir, err)
	})
	if !m.isKV && (errors.Is(err, resolver.ErrNotFound) || err == nil && (s == nil || s.Data == nil)) {
		// Another engine's paths (database/creds/ROLE, pki/issue/ROLE)
		// cannot be listed: what is below them is known only by name.
		return nil, fmt.Errorf("vault list %s: %w", dir, errors.ErrUnsupported)
	}
	if errors.Is(err, resolver.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if s == nil || s.Data == nil {
		return nil, nil
	}
	keys, _ := s.Data["keys"].([]any)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if ks, ok := k.(string); ok {
			out = append(out, ks)
		}
	}
	return out, nil
}

// nextSegments returns, for the mount paths below under, their next path
// segment as a directory entry.
func nextSegments(mounts []string, under string) []string {
	seen := make(map[string]bool)
	var out []string
	for _, m := range mounts {
		if !strings.HasPrefix(m, under) {
			continue
		}
		seg, _, _ := strings.Cut(strings.TrimPrefix(m, under), "/")
		if seg != "" && !seen[seg] {
			seen[seg] = true
			out = append(out, seg+"/")
		}
	}
	return out
}

// listMounts returns the KV mounts the token can see ("secret/"), from
// --vault-mounts, sys/internal/ui/mounts or sys/mounts.
func (p *Provider) listMounts(ctx context.Context) ([]string, error) {
	if len(p.cfg.Mounts) > 0 {
		out := make([]string, 0, len(p.cfg.Mounts))
		for _, m := range p.cfg.Mounts {
			out = append(out, strings.Trim(m, "/")+"/")
		}
		return out, nil
	}
	var raw map[string]any
	err := p.retryAfterRelogin(ctx, func() error {
		s, err := p.client.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts")
		if err != nil {
			return p.mapError("list mounts", err)
		}
		if s != nil && s.Data != nil {
			raw, _ = s.Data["secret"].(map[string]any)
		}
		return nil
	})
	if errors.Is(err, resolver.ErrPermission) || (err == nil && raw == nil) {
		s, serr := p.client.Logical().ReadWithContext(ctx, "sys/mounts")
		if serr != nil {
			return nil, p.mapError("list mounts", serr)
		}
		if s != nil {
			raw = s.Data
		}
		err = nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	p.mountsMu.Lock()
	defer p.mountsMu.Unlock()
	for path, v := range raw {
		d, ok := v.(map[string]any)
		if !ok {
			continue
		}
		d["path"] = path
		m := infoOf(d)
		if !m.isKV {
			continue
		}
		p.mounts[m.path] = m
		out = append(out, m.path)
	}
	sort.Strings(out)
	return out, nil
}
