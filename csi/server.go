package csi

import (
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
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
)

// Defaults of Options fields left zero.
const (
	DefaultMaxIdentities = 1000
	DefaultMaxEntries    = 1000
	DefaultIdleTimeout   = 2 * time.Hour
	fetchConcurrency     = 8
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
	// to log in with, DefaultAudience its default.
	Audience, DefaultAudience string
	// Params are the class parameters that configure the provider; with
	// the namespace and service account they make the identity.
	Params []string
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
	var b strings.Builder
	fmt.Fprintf(&b, "%s\x00%s\x00%s\x00%t", id.Provider, id.Namespace, id.ServiceAccount, id.NodeCredentials)
	for _, k := range slices.Sorted(maps.Keys(id.Settings)) {
		fmt.Fprintf(&b, "\x00%s=%s", k, id.Settings[k])
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
	IdleTimeout   time.Duration
	Version       string
	Logger        *slog.Logger
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

	mu      sync.Mutex
	engines map[string]*engine // guarded by mu; by Identity.key
	lru     *list.List         // guarded by mu; *engine, most recently used first
	closed  bool               // guarded by mu
	wg      sync.WaitGroup     // engines being closed
	stop    chan struct{}      // closed by Close: ends the janitor
}

// engine is one identity's cache and provider.
type engine struct {
	key      string
	provider resolver.Provider
	cache    *cache.Cache
	token    *tokenBox
	elem     *list.Element // guarded by Server.mu
	lastUse  time.Time     // guarded by Server.mu
	inUse    int           // guarded by Server.mu; mounts using it now
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
		engines: make(map[string]*engine), lru: list.New(), stop: make(chan struct{})}
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
	if err != nil {
		s.log.Warn("mount refused", "result", codeOf(err).String(), "error", err)
		return nil, s.status(err)
	}
	resp, err := s.mount(ctx, req)
	refs := make([]string, len(req.Objects))
	for i, o := range req.Objects {
		refs[i] = o.What()
	}
	attrs := []any{"pod", req.Pod.String(), "uid", req.Pod.UID, "serviceaccount", req.Pod.ServiceAccount,
		"refs", strings.Join(refs, ","), "result", codeOf(err).String(), "duration", time.Since(start).Round(time.Microsecond)}
	if err != nil {
		s.log.Warn("mount", append(attrs, "error", err)...)
		return nil, s.status(err)
	}
	s.log.Info("mount", append(attrs, "files", len(resp.Files))...)
	return resp, nil
}

func (s *Server) mount(ctx context.Context, req *Request) (*v1alpha1.MountResponse, error) {
	files := make([]*v1alpha1.File, len(req.Objects))
	versions := make([]*v1alpha1.ObjectVersion, len(req.Objects))
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
				out, _, err := o.Template.Render(gctx, func(ctx context.Context, ref resolver.Reference) ([]byte, error) {
					v, err := get(ctx, ref)
					return v.Value, err
				})
				if err != nil {
					return fmt.Errorf("%s[%d] (%s): %w", ParamObjects, i, o.What(), err)
				}
				content, version = out, s.mac(out)
			} else {
				v, err := get(gctx, o.Ref)
				if err != nil {
					return fmt.Errorf("%s[%d]: %w", ParamObjects, i, err)
				}
				content, version = v.Value, s.objectVersion(o.Ref, v.Secret)
			}
			files[i] = &v1alpha1.File{Path: o.Path, Mode: int32(o.Mode), Contents: content}
			versions[i] = &v1alpha1.ObjectVersion{Id: o.Path, Version: version}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	resp := &v1alpha1.MountResponse{Files: files, ObjectVersion: versions}
	size := proto.Size(resp)
	if size > DriverRecvLimit {
		return nil, &sizeError{size: size}
	}
	if size > SyncLimit {
		s.log.Warn("the volume's files are above 1 MiB: syncing them to a Kubernetes Secret (secretObjects) will fail",
			"pod", req.Pod.String(), "bytes", size)
	}
	return resp, nil
}

// sizeError: the response would be above the driver's gRPC limit.
type sizeError struct{ size int }

func (e *sizeError) Error() string {
	return fmt.Sprintf("the files take %d bytes, above the driver's default gRPC limit of %d: raise the driver's --max-call-recv-msg-size or split the volume",
		e.size, DriverRecvLimit)
}

// objectVersion is the backend's version of the secret where it has one,
// with the field; otherwise the HMAC of the content.
func (s *Server) objectVersion(ref resolver.Reference, sec resolver.Secret) string {
	if sec.Version == "" {
		return s.mac(sec.Value)
	}
	if ref.Field != "" {
		return sec.Version + "#" + ref.Field
	}
	return sec.Version
}

// mac is a version of content that says nothing about it: an HMAC under
// the process's key, so that a short secret cannot be guessed from it.
func (s *Server) mac(content []byte) string {
	m := hmac.New(sha256.New, s.macKey)
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
	aud := b.DefaultAudience
	if a := req.Params[b.Audience]; a != "" {
		aud = a
	}
	tok, ok := req.Tokens[aud]
	if !ok {
		return Identity{}, b, "", &ParamError{Param: AttrTokens, Problem: fmt.Sprintf(
			"no token for audience %q: the CSIDriver object's tokenRequests must list it (see %s)", aud, b.Audience)}
	}
	return id, b, tok, nil
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
			return nil, fmt.Errorf("%s for %s/%s: %w", provider, id.Namespace, id.ServiceAccount, err)
		}
		r, err := resolver.New(p)
		if err != nil {
			closeProvider(p)
			return nil, err
		}
		r.Timeout = s.opts.Cache.Timeout
		e := &engine{key: k, provider: p, cache: cache.New(r, s.opts.Cache), token: box}
		if !s.add(e) {
			e.close()
			return nil, fmt.Errorf("%s: %w: the provider is stopping", provider, resolver.ErrUnavailable)
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
	if s.opts.Cache.Timeout > 0 {
		return s.opts.Cache.Timeout
	}
	return resolver.DefaultTimeout
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

// add keeps e, closing the least recently used idle engines above the
// bound. It is false once the server is closed.
func (s *Server) add(e *engine) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	e.lastUse = time.Now()
	e.elem = s.lru.PushFront(e)
	s.engines[e.key] = e
	for el := s.lru.Back(); el != nil && len(s.engines) > s.opts.MaxIdentities; {
		prev := el.Prev()
		if old := el.Value.(*engine); old != e && old.inUse == 0 {
			s.closeLocked(old)
		}
		el = prev
	}
	return true
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

// Stats sums the engines' counters (for metrics). Counters of closed
// engines are lost.
func (s *Server) Stats() cache.Stats {
	var sum cache.Stats
	for _, e := range s.snapshot() {
		st := e.cache.Stats()
		sum.Hits += st.Hits
		sum.Misses += st.Misses
		sum.Stale += st.Stale
		sum.Calls += st.Calls
		sum.Refreshes += st.Refreshes
		sum.Throttled += st.Throttled
	}
	return sum
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
	case errors.As(err, &se):
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

// status is err as the gRPC status the driver gets. What is not
// classified is logged and told as Internal.
func (s *Server) status(err error) error {
	c := codeOf(err)
	if c == codes.Internal {
		s.log.Error("mount failed with an unexpected error", "error", err)
		return status.Error(c, "internal error; see the secretfs provider's log")
	}
	return status.Error(c, err.Error())
}
