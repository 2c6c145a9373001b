package csi

import (
	"bytes"
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

// Sizes the driver cares about.
const (
	// SyncLimit: a Kubernetes Secret holds at most 1 MiB, so a volume
	// above it cannot be synced to one (secretObjects).
	SyncLimit = 1 << 20
	// DriverRecvLimit is the driver's default --max-call-recv-msg-size.
	DriverRecvLimit = 4 << 20
)

// Token audiences secretfs asks for by default: the CSIDriver object's
// tokenRequests must list them (or the class names others).
const (
	DefaultVaultAudience = "vault"
	DefaultAWSAudience   = "sts.amazonaws.com"
	DefaultAzureAudience = "api://AzureADTokenExchange"
)

// Defaults of Options fields left zero.
const (
	DefaultMaxIdentities   = 1000
	DefaultMaxPerNamespace = 100
	DefaultMaxEntries      = 1000
	DefaultIdleTimeout     = 2 * time.Hour
	fetchConcurrency       = 8
)

// Backend is a provider the server can offer pods.
type Backend struct {
	Name string
	// Role is the class parameter that gives a pod its own identity at
	// the backend (vaultRole, awsRoleArn). Without it the node's own
	// credentials are used, and only when Options.AllowNodeCredentials.
	// Empty for a provider that has no identity of its own (env): it is
	// offered to every pod, and the command line decides whether it is a
	// Backend at all.
	Role string
	// Audience is the parameter naming the audience of the pod's token
	// to log in with, DefaultAudience its default, or AudienceOf the
	// default as the Role parameter's value decides it (gcp: the pool
	// provider's own audience).
	Audience, DefaultAudience string
	AudienceOf                func(role string) string
	// Params are the class parameters that configure the provider; with
	// the namespace and service account they make the identity.
	Params []string
	// Endpoint is the class parameter naming where the backend is
	// (vaultAddress), and Allowed says whether the node lets classes name
	// an address: a pod's token goes nowhere the node operator did not
	// list. A class that names an address needs Allowed.
	Endpoint string
	Allowed  func(addr string) bool
	// Open opens the provider for one identity. ctx bounds the opening
	// (a first login).
	Open func(ctx context.Context, id Identity) (resolver.Provider, error)
}

// Identity is who a provider instance acts as.
type Identity struct {
	Provider       string
	Namespace      string
	ServiceAccount string
	// Settings are the Backend's Params that the class set.
	Settings map[string]string
	// NodeCredentials: the provider acts with the node's credentials.
	NodeCredentials bool
	// Token returns the newest service-account token of the identity's
	// pods for the backend's audience (per-pod identities only).
	Token func() (string, error)
}

// key is the identity as a map key: everything but the token.
func (id Identity) key() string {
	fields := []string{id.Provider, id.Namespace, id.ServiceAccount, fmt.Sprint(id.NodeCredentials)}
	for _, k := range slices.Sorted(maps.Keys(id.Settings)) {
		fields = append(fields, k, id.Settings[k])
	}
	return lengthPrefixed(fields...)
}

// lengthPrefixed joins fields so that no two lists give one string.
func lengthPrefixed(fields ...string) string {
	var b strings.Builder
	for _, f := range fields {
		fmt.Fprintf(&b, "%d:%s", len(f), f)
	}
	return b.String()
}

// Options configures a Server.
type Options struct {
	Backends []Backend
	// AllowNodeCredentials lets pods whose class sets no Role parameter
	// read with the node's own credentials: for single-tenant clusters.
	AllowNodeCredentials bool
	// Cache is the template of every identity's engine (TTL, MaxStale,
	// Timeout, Observer...); MaxEntries bounds each identity.
	Cache cache.Options
	// MaxIdentities bounds the engines kept; the least recently used idle
	// one is closed first. IdleTimeout closes an engine no mount used for
	// that long.
	MaxIdentities int
	// MaxPerNamespace bounds the identities of one namespace, so that one
	// tenant cannot push every other one's out: past it, the namespace's
	// own least recently used idle identity goes.
	MaxPerNamespace int
	IdleTimeout     time.Duration
	// MaxResponse bounds a Mount's reply (the driver's
	// --max-call-recv-msg-size; DriverRecvLimit by default).
	MaxResponse int
	Version     string
	Logger      *slog.Logger
}

// Server is the provider. It implements v1alpha1.CSIDriverProviderServer.
type Server struct {
	v1alpha1.UnimplementedCSIDriverProviderServer
	opts     Options
	log      *slog.Logger
	backends map[string]Backend
	macKey   []byte // the process's key of content versions
	opens    singleflight.Group
	ctx      context.Context // ends with Close; engines open under it
	cancel   context.CancelFunc

	mu       sync.Mutex
	engines  map[string]*engine // guarded by mu; by Identity.key
	lru      *list.List         // guarded by mu; *engine, most recently used first
	failures map[string]failure // guarded by mu; identities that could not be opened, by Identity.key
	gone     cache.Stats        // guarded by mu; the counters of closed engines
	closed   bool               // guarded by mu
	wg       sync.WaitGroup     // engines being closed
	stop     chan struct{}      // closed by Close: ends the janitor
	// young: an engine this new is not idle (its opener is about to use
	// it); tests set it to zero.
	young time.Duration
}

// failure is an identity that could not be opened, remembered for the
// negative TTL so that every republish of a bad class does not log in.
type failure struct {
	err   error
	until time.Time
}

// engine is one identity's cache and provider.
type engine struct {
	key       string
	namespace string
	provider  resolver.Provider
	cache     *cache.Cache
	token     *tokenBox
	elem      *list.Element // guarded by Server.mu
	lastUse   time.Time     // guarded by Server.mu
	inUse     int           // guarded by Server.mu; mounts using it now
}

// tokenBox holds an identity's newest token.
type tokenBox struct {
	mu  sync.Mutex
	tok string // guarded by mu
}

func (b *tokenBox) set(t string) {
	b.mu.Lock()
	b.tok = t
	b.mu.Unlock()
}

func (b *tokenBox) get() (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tok == "" {
		return "", errors.New("no service-account token yet")
	}
	return b.tok, nil
}

// New returns a Server; Close ends it.
func New(opts Options) (*Server, error) {
	if opts.MaxIdentities <= 0 {
		opts.MaxIdentities = DefaultMaxIdentities
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxPerNamespace <= 0 {
		opts.MaxPerNamespace = DefaultMaxPerNamespace
	}
	if opts.MaxResponse <= 0 {
		opts.MaxResponse = DriverRecvLimit
	}
	if opts.Cache.MaxEntries <= 0 {
		opts.Cache.MaxEntries = DefaultMaxEntries
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts.Cache.Logger = log
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: log, backends: make(map[string]Backend), macKey: key,
		engines: make(map[string]*engine), lru: list.New(), failures: make(map[string]failure), stop: make(chan struct{}), young: time.Second}
	for _, b := range opts.Backends {
		s.backends[b.Name] = b
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.janitor()
	return s, nil
}

// Providers names the providers offered to pods, sorted.
func (s *Server) Providers() []string { return slices.Sorted(maps.Keys(s.backends)) }

// Close closes every engine and waits for them.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.stop)
	for _, e := range s.engines {
		s.closeLocked(e)
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Version implements v1alpha1.CSIDriverProviderServer.
func (s *Server) Version(context.Context, *v1alpha1.VersionRequest) (*v1alpha1.VersionResponse, error) {
	return &v1alpha1.VersionResponse{Version: "v1alpha1", RuntimeName: "secretfs", RuntimeVersion: s.opts.Version}, nil
}

// Mount implements v1alpha1.CSIDriverProviderServer.
func (s *Server) Mount(ctx context.Context, in *v1alpha1.MountRequest) (*v1alpha1.MountResponse, error) {
	start := time.Now()
	req, err := ParseMount(in.GetAttributes(), in.GetPermission())
	var resp *v1alpha1.MountResponse
	var refs []string
	if err == nil {
		resp, refs, err = s.mount(ctx, req)
	}
	code := codeOf(err)
	attrs := []any{"pod", req.Pod.String(), "uid", req.Pod.UID, "serviceaccount", req.Pod.ServiceAccount,
		"refs", strings.Join(refs, ","), "result", code.String(), "duration", time.Since(start).Round(time.Microsecond)}
	switch {
	case code == codes.Internal:
		s.log.Error("mount", append(attrs, "error", err)...)
		return nil, status.Error(code, "internal error; see the secretfs provider's log")
	case err != nil:
		s.log.Warn("mount", append(attrs, "error", err)...)
		return nil, status.Error(code, err.Error())
	}
	s.log.Info("mount", append(attrs, "files", len(resp.Files))...)
	return resp, nil
}

// mount reads the request's objects. It returns the files and what was
// read, for the log.
func (s *Server) mount(ctx context.Context, req *Request) (*v1alpha1.MountResponse, []string, error) {
	files := make([]*v1alpha1.File, len(req.Objects))
	versions := make([]*v1alpha1.ObjectVersion, len(req.Objects))
	read := make([][]string, len(req.Objects))
	var held []*engine
	var heldMu sync.Mutex
	defer func() {
		s.release(held)
	}()
	get := func(ctx context.Context, ref resolver.Reference) (cache.Value, error) {
		e, err := s.engine(ctx, req, ref.Provider)
		if err != nil {
			return cache.Value{}, err
		}
		heldMu.Lock()
		held = append(held, e)
		heldMu.Unlock()
		return e.cache.Get(ctx, ref)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fetchConcurrency)
	for i, o := range req.Objects {
		g.Go(func() error {
			var content []byte
			var version string
			if o.Template != nil {
				var holdMu sync.Mutex
				var holds []any // guarded by holdMu; keep the values read (locked memory) valid until the render is done
				out, refs, err := o.Template.Render(gctx, func(ctx context.Context, ref resolver.Reference) ([]byte, error) {
					v, err := get(ctx, ref)
					holdMu.Lock()
					holds = append(holds, v.Hold)
					holdMu.Unlock()
					return v.Value, err
				})
				runtime.KeepAlive(holds)
				for _, r := range refs {
					read[i] = append(read[i], r.String())
				}
				if errors.Is(err, templates.ErrRender) || errors.Is(err, templates.ErrLimit) {
					return &ParamError{Param: fmt.Sprintf("%s[%d].template", ParamObjects, i), Problem: err.Error()}
				}
				if err != nil {
					return fmt.Errorf("%s[%d] (%s): %w", ParamObjects, i, o.What(), err)
				}
				content, version = out, s.mac(req, o.Path, out)
			} else {
				read[i] = []string{o.Ref.String()}
				v, err := get(gctx, o.Ref)
				if err != nil {
					return fmt.Errorf("%s[%d]: %w", ParamObjects, i, err)
				}
				// The response outlives this function, and a value in
				// locked memory lives as long as its Secret: the file
				// gets a copy of its own.
				content, version = bytes.Clone(v.Value), s.objectVersion(req, o, v.Secret)
				runtime.KeepAlive(v.Hold)
			}
			files[i] = &v1alpha1.File{Path: o.Path, Mode: int32(o.Mode), Contents: content}
			versions[i] = &v1alpha1.ObjectVersion{Id: o.Path, Version: version}
			return nil
		})
	}
	err := g.Wait()
	var refs []string
	for _, r := range read {
		refs = append(refs, r...)
	}
	if err != nil {
		return nil, refs, err
	}
	resp := &v1alpha1.MountResponse{Files: files, ObjectVersion: versions}
	size := proto.Size(resp)
	if size > s.opts.MaxResponse {
		return nil, refs, &sizeError{size: size, limit: s.opts.MaxResponse}
	}
	if size > SyncLimit {
		s.log.Warn("the volume's files are above 1 MiB: syncing them to a Kubernetes Secret (secretObjects) will fail",
			"pod", req.Pod.String(), "bytes", size)
	}
	return resp, refs, nil
}

// sizeError: the response would be above the driver's gRPC limit.
type sizeError struct{ size, limit int }

func (e *sizeError) Error() string {
	return fmt.Sprintf("the files take %d bytes, above the limit of %d (the driver's --max-call-recv-msg-size, 4 MiB by default): raise it and secretfs's --max-response-size together, or split the volume",
		e.size, e.limit)
}

// objectVersion is the backend's version of a whole secret where it has
// one (a field's value may change while the secret's version does not
// change it, and back); otherwise the HMAC of the content.
func (s *Server) objectVersion(req *Request, o Object, sec resolver.Secret) string {
	if sec.Version == "" || o.Ref.Field != "" {
		return s.mac(req, o.Path, sec.Value)
	}
	return sec.Version
}

// mac is a version of content that says nothing about it: an HMAC under
// the process's key of the pod's namespace and service account, the path
// and the content. The identity in it keeps one tenant from learning the
// MAC of a guess (with a template of constant text) that would match
// another tenant's versions.
func (s *Server) mac(req *Request, path string, content []byte) string {
	m := hmac.New(sha256.New, s.macKey)
	m.Write([]byte(lengthPrefixed(req.Pod.Namespace, req.Pod.ServiceAccount, path)))
	m.Write(content)
	return "hmac-sha256:" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

// identity is who a request reads provider as.
func (s *Server) identity(req *Request, provider string) (Identity, Backend, string, error) {
	b, ok := s.backends[provider]
	if !ok {
		return Identity{}, b, "", &ParamError{Param: ParamObjects, Problem: fmt.Sprintf("provider %q is not offered to pods (offered: %s)",
			provider, strings.Join(s.Providers(), ", "))}
	}
	if addr := req.Params[b.Endpoint]; b.Endpoint != "" && addr != "" && (b.Allowed == nil || !b.Allowed(addr)) {
		return Identity{}, b, "", &ParamError{Param: b.Endpoint, Problem: fmt.Sprintf(
			"%q is not an address this node lets classes name (the node's own, or --%s-allowed-address)", addr, provider)}
	}
	id := Identity{Provider: provider, Namespace: req.Pod.Namespace, ServiceAccount: req.Pod.ServiceAccount, Settings: make(map[string]string)}
	for _, p := range b.Params {
		if v, ok := req.Params[p]; ok {
			id.Settings[p] = v
		}
	}
	if b.Role == "" {
		return id, b, "", nil
	}
	if req.Params[b.Role] == "" {
		if !s.opts.AllowNodeCredentials {
			return Identity{}, b, "", fmt.Errorf("%s: parameter %s is not set, and the node's own credentials are not offered to pods (--allow-node-credentials): %w",
				provider, b.Role, resolver.ErrPermission)
		}
		id.NodeCredentials = true
		return id, b, "", nil
	}
	aud := s.audience(req, b)
	// A token for another backend's audience (sts.amazonaws.com for a
	// Vault login) would be accepted there: it never goes elsewhere.
	// Another backend's audience is its default, whatever the class says
	// of it (a class could move it out of the way), and what the class sets
	// for it; the defaults of backends this build may not carry too.
	// Backends are told apart by their audience parameter.
	others := maps.Clone(knownAudiences)
	for _, o := range s.opts.Backends {
		if o.Audience != "" {
			others[o.Audience] = o.DefaultAudience
		}
	}
	for param, def := range others {
		if param != b.Audience && (strings.EqualFold(aud, def) || strings.EqualFold(aud, req.Params[param])) {
			return Identity{}, b, "", &ParamError{Param: b.Audience, Problem: fmt.Sprintf(
				"audience %q is another backend's (%s): a %s login never uses another backend's audience", aud, param, b.Name)}
		}
	}
	if b.Audience != ParamGCPAudience && GoogleAudience(aud) {
		return Identity{}, b, "", &ParamError{Param: b.Audience, Problem: fmt.Sprintf(
			"audience %q is Google's STS's: a %s login never uses another backend's audience", aud, b.Name)}
	}
	tok, ok := req.Tokens[aud]
	if !ok {
		return Identity{}, b, "", &ParamError{Param: AttrTokens, Problem: fmt.Sprintf(
			"no token for audience %q: the CSIDriver object's tokenRequests must list it (see %s)", aud, b.Audience)}
	}
	if sub, ok := tokenSubject(tok); ok && sub != "system:serviceaccount:"+req.Pod.Namespace+":"+req.Pod.ServiceAccount {
		return Identity{}, b, "", fmt.Errorf("%s: the token of audience %q is not of the pod's service account %s/%s: %w",
			provider, aud, req.Pod.Namespace, req.Pod.ServiceAccount, resolver.ErrPermission)
	}
	return id, b, tok, nil
}

// knownAudiences are the default audiences of the backends there are, by
// their audience parameter, whether or not this build carries them.
var knownAudiences = map[string]string{ParamVaultAudience: DefaultVaultAudience, ParamAWSAudience: DefaultAWSAudience,
	ParamAzureAudience: DefaultAzureAudience}

// GoogleAudience reports whether aud looks like an audience Google's STS
// accepts for a workload identity pool provider (its default audience, the
// provider's name): only gcp logins use such tokens, whatever a class says.
// GKE's own pools (PROJECT.svc.id.goog, identitynamespace:...) included,
// in any case.
func GoogleAudience(aud string) bool {
	a := strings.ToLower(aud)
	return strings.Contains(a, "iam.googleapis.com") || strings.Contains(a, ".svc.id.goog") || strings.HasPrefix(a, "identitynamespace:")
}

// GCPDefaultAudience is the audience a pool provider accepts unless it
// lists others: its name, as an https URL.
func GCPDefaultAudience(provider string) string {
	return "https:" + provider
}

// audience is the audience of the pod's token a login at b uses.
func (s *Server) audience(req *Request, b Backend) string {
	if a := req.Params[b.Audience]; a != "" {
		return a
	}
	if b.AudienceOf != nil {
		return b.AudienceOf(req.Params[b.Role])
	}
	return b.DefaultAudience
}

// tokenSubject is the sub claim of a JWT, read without checking the
// signature (the backend checks it): the identity is keyed by the pod's
// namespace and service account, so a token of another one must not log in
// under that key.
func tokenSubject(tok string) (string, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Sub == "" {
		return "", false
	}
	return claims.Sub, true
}

// engine returns (opening it if need be) the engine of the identity that
// req reads provider as, marked in use until release.
func (s *Server) engine(ctx context.Context, req *Request, provider string) (*engine, error) {
	id, b, tok, err := s.identity(req, provider)
	if err != nil {
		return nil, err
	}
	k := id.key()
	if e := s.use(k, tok); e != nil {
		return e, nil
	}
	if err := s.failed(k); err != nil {
		return nil, err
	}
	// Open once for concurrent mounts of one new identity, under the
	// server's context and the call budget, not under this mount's.
	ch := s.opens.DoChan(k, func() (any, error) {
		if s.has(k) {
			return nil, nil // opened by a flight that just ended
		}
		box := &tokenBox{tok: tok}
		if b.Role != "" && !id.NodeCredentials {
			id.Token = box.get
		}
		octx, cancel := context.WithTimeout(s.ctx, s.budget())
		defer cancel()
		p, err := b.Open(octx, id)
		if err != nil {
			err = fmt.Errorf("%s for %s/%s: %w", provider, id.Namespace, id.ServiceAccount, err)
			s.fail(k, err)
			return nil, err
		}
		r, err := resolver.New(p)
		if err != nil {
			closeProvider(p)
			return nil, err
		}
		r.Deadlines = s.opts.Cache.Deadlines
		e := &engine{key: k, namespace: id.Namespace, provider: p, cache: cache.New(r, s.opts.Cache), token: box}
		if err := s.add(e); err != nil {
			e.close()
			return nil, fmt.Errorf("%s for %s/%s: %w", provider, id.Namespace, id.ServiceAccount, err)
		}
		s.log.Info("identity opened", "provider", provider, "namespace", id.Namespace, "serviceaccount", id.ServiceAccount,
			"node_credentials", id.NodeCredentials)
		return nil, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		if e := s.use(k, tok); e != nil {
			return e, nil
		}
		return nil, fmt.Errorf("%s: %w: the identity was closed while opening", provider, resolver.ErrUnavailable)
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: opening the identity: %w", provider, ctx.Err())
	}
}

func (s *Server) budget() time.Duration {
	return s.opts.Cache.Deadlines.CallFor("")
}

func (s *Server) has(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.engines[k] != nil
}

// use finds the engine of k, marks it used and in use, and gives it the
// newest token.
func (s *Server) use(k, tok string) *engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.engines[k]
	if e == nil {
		return nil
	}
	e.inUse++
	e.lastUse = time.Now()
	s.lru.MoveToFront(e.elem)
	if tok != "" {
		e.token.set(tok)
	}
	return e
}

// failed is the error of opening k, while it is remembered.
func (s *Server) failed(k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.failures[k]
	if !ok || time.Now().After(f.until) {
		delete(s.failures, k)
		return nil
	}
	return f.err
}

// fail remembers that k could not be opened, for the negative TTL, unless
// the backend was only unavailable.
func (s *Server) fail(k string, err error) {
	if resolver.KindOf(err) == resolver.KindUnavailable || resolver.KindOf(err) == resolver.KindCanceled {
		return
	}
	ttl := s.opts.Cache.NegativeTTL
	if ttl <= 0 {
		ttl = cache.DefaultNegativeTTL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) > s.opts.MaxIdentities { // a bound, not a policy
		clear(s.failures)
	}
	s.failures[k] = failure{err: err, until: time.Now().Add(ttl)}
}

// errFull: every identity slot is taken by mounts under way.
var errFull = errors.New("too many identities in use on this node")

// add keeps e. Above MaxPerNamespace identities in e's namespace, that
// namespace's least recently used idle one is closed; above
// MaxIdentities, the least recently used idle one of any. An engine is
// idle when no mount uses it and it is more than a second old (its opener
// is about to use it). When the bounds cannot be kept, e is refused.
func (s *Server) add(e *engine) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("%w: the provider is stopping", resolver.ErrUnavailable)
	}
	now := time.Now()
	idle := func(old *engine) bool { return old.inUse == 0 && now.Sub(old.lastUse) >= s.young }
	inNS := 0
	for _, old := range s.engines {
		if old.namespace == e.namespace {
			inNS++
		}
	}
	for el := s.lru.Back(); el != nil && inNS >= s.opts.MaxPerNamespace; {
		prev := el.Prev()
		if old := el.Value.(*engine); old.namespace == e.namespace && idle(old) {
			s.closeLocked(old)
			inNS--
		}
		el = prev
	}
	for el := s.lru.Back(); el != nil && len(s.engines) >= s.opts.MaxIdentities; {
		prev := el.Prev()
		if old := el.Value.(*engine); idle(old) {
			s.closeLocked(old)
		}
		el = prev
	}
	if inNS >= s.opts.MaxPerNamespace || len(s.engines) >= s.opts.MaxIdentities {
		return errFull
	}
	e.lastUse = now
	e.elem = s.lru.PushFront(e)
	s.engines[e.key] = e
	return nil
}

// release ends the use of engines by one mount.
func (s *Server) release(es []*engine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		e.inUse--
	}
}

// closeLocked forgets e and closes it in the background (a Vault
// provider's Close waits for its token watcher). s.mu is held.
func (s *Server) closeLocked(e *engine) {
	delete(s.engines, e.key)
	s.lru.Remove(e.elem)
	s.gone = addStats(s.gone, e.cache.Stats())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		e.close()
	}()
}

func (e *engine) close() {
	e.cache.Close()
	closeProvider(e.provider)
}

func closeProvider(p resolver.Provider) {
	if c, ok := p.(io.Closer); ok {
		c.Close()
	}
}

// janitor closes engines idle for IdleTimeout.
func (s *Server) janitor() {
	t := time.NewTicker(min(s.opts.IdleTimeout/4, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			for el := s.lru.Back(); el != nil; {
				prev := el.Prev()
				if e := el.Value.(*engine); e.inUse == 0 && now.Sub(e.lastUse) > s.opts.IdleTimeout {
					s.closeLocked(e)
				}
				el = prev
			}
			s.mu.Unlock()
		}
	}
}

// Identities is the number of engines open.
func (s *Server) Identities() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.engines)
}

// Stats sums the counters of every engine, open or closed (for metrics).
func (s *Server) Stats() cache.Stats {
	s.mu.Lock()
	sum := s.gone
	open := slices.Collect(maps.Values(s.engines))
	s.mu.Unlock()
	for _, e := range open {
		sum = addStats(sum, e.cache.Stats())
	}
	return sum
}

func addStats(a, b cache.Stats) cache.Stats {
	a.Hits += b.Hits
	a.Misses += b.Misses
	a.Stale += b.Stale
	a.Calls += b.Calls
	a.Refreshes += b.Refreshes
	a.Throttled += b.Throttled
	return a
}

// Len sums what the engines hold.
func (s *Server) Len() (values, negatives int) {
	for _, e := range s.snapshot() {
		v, n := e.cache.Len()
		values += v
		negatives += n
	}
	return values, negatives
}

// Down is true while provider is down for any identity.
func (s *Server) Down(provider string) bool {
	for _, e := range s.snapshot() {
		if e.cache.Down(provider) {
			return true
		}
	}
	return false
}

func (s *Server) snapshot() []*engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Values(s.engines))
}

// codeOf is the gRPC code of err: the one classification of errors
// (resolver.KindOf), plus what is the provider's own.
func codeOf(err error) codes.Code {
	var pe *ParamError
	var se *sizeError
	switch {
	case err == nil:
		return codes.OK
	case errors.As(err, &pe):
		return codes.InvalidArgument
	case errors.As(err, &se), errors.Is(err, errFull):
		return codes.ResourceExhausted
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	switch resolver.KindOf(err) {
	case resolver.KindNotFound:
		return codes.NotFound
	case resolver.KindInvalid:
		return codes.InvalidArgument
	case resolver.KindPermission:
		return codes.PermissionDenied
	case resolver.KindUnavailable:
		return codes.Unavailable
	case resolver.KindCanceled:
		return codes.Canceled
	case resolver.KindUnsupported:
		return codes.FailedPrecondition
	default:
		return codes.Internal
	}
}
