package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/csi"
	"github.com/secretfs/secretfs/metrics"
	"github.com/secretfs/secretfs/resolver"
)

const csiUsage = `Usage: secretfs csi-provider --endpoint PATH [flags]

Serves the Kubernetes Secrets Store CSI driver's provider API (v1alpha1,
Version and Mount) on the unix socket PATH, in the foreground, until SIGINT
or SIGTERM. The driver finds providers in
/etc/kubernetes/secrets-store-csi-providers/NAME.sock.

A SecretProviderClass names the files in its "objects" parameter:

  objects: |
    - ref: "aws:prod/rds#password"
      path: db/password
      mode: "0400"

Every provider this binary has is offered to pods, except env (--allow-env).
A pod reads as itself: vaultRole (Kubernetes or JWT auth), awsRoleArn
(web identity), gcpWorkloadIdentityProvider (workload identity
federation, --gcp-sts-url) and clientID (Entra ID workload identity) log
in with the pod's service-account token. Without them
the node's own credentials are used only with --allow-node-credentials.
One line is printed to stdout when the socket is served.
`

// csiFlags are csi-provider's flags: the common ones (providers, engine
// budget, config file) and its own.
type csiFlags struct {
	*common
	endpoint, healthAddr         *string
	allowEnv, allowNode, mlock   *bool
	ttl, negTTL, maxStale        *time.Duration
	idle, grace                  *time.Duration
	maxEntries, maxIdentities    *int
	maxPerNamespace, maxResponse *int
}

func newCSIFlags() *csiFlags {
	c := newCommon("csi-provider")
	f := c.flagSet
	return &csiFlags{common: c,
		endpoint:        f.String("endpoint", "", "unix socket to serve the driver on, e.g. /etc/kubernetes/secrets-store-csi-providers/secretfs.sock"),
		healthAddr:      f.String("health-addr", "", "serve /healthz, /readyz and Prometheus /metrics on HOST:PORT (e.g. :8989)"),
		allowEnv:        f.Bool("allow-env", false, "offer the env provider to pods: it shows this process's environment (mind --env-allow)"),
		allowNode:       f.Bool("allow-node-credentials", false, "let classes that give no identity of the pod's own (vaultRole, awsRoleArn, gcpWorkloadIdentityProvider, clientID) read with the node's own credentials: only for single-tenant clusters"),
		ttl:             f.Duration("ttl", cache.DefaultTTL, "how long a value is served from memory before the backend is asked again"),
		negTTL:          f.Duration("negative-ttl", cache.DefaultNegativeTTL, "how long a not-found answer is remembered"),
		maxStale:        f.Duration("max-stale", cache.DefaultMaxStale, "how long past its TTL a value is served while its backend is unavailable (0: never)"),
		maxEntries:      f.Int("max-entries", csi.DefaultMaxEntries, "most values held in memory for one identity"),
		maxIdentities:   f.Int("max-identities", csi.DefaultMaxIdentities, "most identities (namespace, service account, provider settings) kept; the least recently used idle one goes first"),
		maxPerNamespace: f.Int("max-identities-per-namespace", csi.DefaultMaxPerNamespace, "most identities of one namespace; past it the namespace's own least recently used idle one goes, so no tenant pushes out the others"),
		maxResponse:     f.Int("max-response-size", csi.DriverRecvLimit, "largest Mount reply in bytes: the driver's --max-call-recv-msg-size (4 MiB by default); raise both together"),
		idle:            f.Duration("identity-idle", csi.DefaultIdleTimeout, "close an identity (its cache and its Vault token) that no mount used for this long"),
		grace:           f.Duration("shutdown-grace", 10*time.Second, "after SIGTERM, how long mounts under way may finish"),
		mlock:           f.Bool("mlock", false, "keep values in locked memory that never reaches swap (the files the driver writes are the driver's)"),
	}
}

func runCSI(args []string, stdout, stderr io.Writer) error {
	cf := newCSIFlags()
	c, f := cf.common, cf.flagSet
	if err := c.parse(args, stdout, csiUsage); err != nil {
		return helpOK(err)
	}
	switch {
	case f.NArg() != 0:
		return usagef("csi-provider takes no arguments")
	case *cf.endpoint == "":
		return usagef("--endpoint is required: the unix socket the driver connects to")
	case *cf.ttl <= 0 || *cf.negTTL <= 0 || *cf.maxStale < 0 || *cf.maxEntries <= 0 || *cf.maxIdentities <= 0 || *cf.maxPerNamespace <= 0 || *cf.maxResponse <= 0 || *cf.idle <= 0 || *cf.grace < 0:
		return usagef("--ttl, --negative-ttl, --max-entries, --max-identities, --max-identities-per-namespace, --max-response-size and --identity-idle must be positive, --max-stale and --shutdown-grace not negative")
	case c.timeout <= 0:
		return usagef("--timeout must be positive")
	case len(c.execs) > 0:
		return usagef("exec providers are not offered to pods: they run with the node plugin's privileges")
	}
	// No Mount call waits on the log (a stderr nobody reads).
	sink := newLogSink(stderr)
	defer sink.Close(2 * time.Second)
	log, err := c.logger(sink)
	if err != nil {
		return err
	}
	bs, err := c.podBackends(log, *cf.allowEnv)
	if err != nil {
		return err
	}
	arena, err := harden(*cf.mlock)
	if err != nil {
		return err
	}
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	met := metrics.New(version())
	copts := cache.Options{TTL: *cf.ttl, NegativeTTL: *cf.negTTL, MaxStale: *cf.maxStale, MaxEntries: *cf.maxEntries, Deadlines: resolver.Deadlines{Call: c.timeout}, Observer: met}
	if arena != nil {
		copts.Locker = arena
	}
	srv, err := csi.New(csi.Options{Backends: bs, AllowNodeCredentials: *cf.allowNode, MaxIdentities: *cf.maxIdentities,
		MaxPerNamespace: *cf.maxPerNamespace, MaxResponse: *cf.maxResponse, IdleTimeout: *cf.idle, Version: version(), Logger: log,
		Cache: copts})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := listenUnix(*cf.endpoint)
	if err != nil {
		return fmt.Errorf("--endpoint: %w", err)
	}
	// The listener removes the socket when it closes (gs.Stop): a
	// successor that took the name already is left alone.
	gs := grpc.NewServer()
	v1alpha1.RegisterCSIDriverProviderServer(gs, srv)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(ln) }()

	var ready atomic.Bool
	ready.Store(true)
	health := ""
	if *cf.healthAddr != "" {
		met.Watch(srv, srv.Providers())
		if arena != nil {
			met.WatchLocked(arena.Stats)
		}
		alive := func(ctx context.Context) error {
			conn, err := (&net.Dialer{}).DialContext(ctx, "unix", *cf.endpoint)
			if err != nil {
				return fmt.Errorf("the socket does not answer: %w", err)
			}
			return conn.Close()
		}
		mux := http.NewServeMux()
		mux.Handle("/", met.Handler(alive))
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if !ready.Load() {
				http.Error(w, "stopping", http.StatusServiceUnavailable)
				return
			}
			if err := alive(ctx); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("ok\n"))
		})
		hs, err := metrics.Serve(*cf.healthAddr, mux)
		if err != nil {
			gs.Stop()
			return fmt.Errorf("--health-addr: %w", err)
		}
		defer hs.Close()
		health = " (health on " + hs.Addr() + ")"
	}
	log.Info("serving the CSI driver", "endpoint", *cf.endpoint, "providers", strings.Join(srv.Providers(), ","),
		"node_credentials", *cf.allowNode, "ttl", *cf.ttl, "max_stale", *cf.maxStale)
	fmt.Fprintf(stdout, "secretfs: csi provider on %s%s (providers: %s)\n", *cf.endpoint, health, strings.Join(srv.Providers(), ","))

	select {
	case err := <-served:
		return fmt.Errorf("serving %s: %w", *cf.endpoint, err)
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
	}
	ready.Store(false)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(*cf.grace):
		log.Warn("mounts still under way after the shutdown grace; stopping them", "grace", *cf.grace)
		gs.Stop()
	case <-sigs:
		gs.Stop()
	}
	st := srv.Stats()
	log.Info("stopped", "identities", srv.Identities(), "hits", st.Hits, "misses", st.Misses, "stale", st.Stale, "backend_calls", st.Calls)
	return nil
}

// podBackends describes every provider of the binary that pods may be
// offered (--providers, when given, narrows them).
func (c *common) podBackends(log *slog.Logger, allowEnv bool) ([]csi.Backend, error) {
	var out []csi.Backend
	narrow := c.flagSet.Changed("providers")
	for _, name := range c.providers {
		if _, ok := c.openers[name]; narrow && !ok {
			if err := c.notCompiled(name); err != nil {
				return nil, err
			}
			return nil, usagef("--providers: unknown provider %q (have %s)", name, strings.Join(compiledNames(), ", "))
		}
	}
	for _, b := range compiled() {
		o := c.openers[b.name]
		if o.pod == nil || (narrow && !slices.Contains(c.providers, b.name)) || (b.podOptIn && !allowEnv) {
			continue
		}
		cb := o.csi
		cb.Name = b.name
		pod := o.pod
		cb.Open = func(ctx context.Context, id csi.Identity) (resolver.Provider, error) {
			return pod(ctx, log.With("provider", id.Provider, "namespace", id.Namespace, "serviceaccount", id.ServiceAccount), id)
		}
		out = append(out, cb)
	}
	if len(out) == 0 {
		return nil, usagef("no provider to offer pods (env needs --allow-env)")
	}
	return out, nil
}

// listenUnix listens on path, first removing a socket that no one serves
// any more (a crash left it). It refuses to take over a live socket or to
// remove anything else.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil, fmt.Errorf("%s is served by another process", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("removing the stale socket: %w", err)
		}
	}
	old := syscall.Umask(0o177) // the socket is 0600: the driver runs as root
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	return ln, err
}
