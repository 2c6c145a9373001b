// Package metrics serves what secretfs does as Prometheus metrics, and its
// health, over HTTP (--metrics-addr).
//
// No secret value and no secret name ever becomes a metric or a label:
// labels are providers, results (the kinds of error, see resolver.Kind, and
// "throttled") and FUSE operations. Reads that the kernel serves from its
// own cache never reach secretfs, so they move no counter.
package metrics

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/locked"
)

// Metrics is one registry of secretfs's metrics. It implements
// cache.Observer.
type Metrics struct {
	reg             *prometheus.Registry
	backendRequests *prometheus.CounterVec
	backendDuration *prometheus.HistogramVec
	staleServed     *prometheus.HistogramVec
	fuseRequests    *prometheus.CounterVec
	leaseRenewals   *prometheus.CounterVec
	leaseReplaced   *prometheus.CounterVec
	onChangeRuns    *prometheus.CounterVec
}

// New returns the metrics of a secretfs of version.
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		backendRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secretfs_backend_requests_total", Help: "Calls to providers, by provider and result.",
		}, []string{"provider", "result"}),
		backendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "secretfs_backend_request_duration_seconds", Help: "How long calls to providers took.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"provider"}),
		staleServed: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "secretfs_stale_served_seconds", Help: "How far past its expiry a value served stale was.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}, []string{"provider"}),
		fuseRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secretfs_fuse_requests_total", Help: "FUSE requests that reached secretfs, by operation.",
		}, []string{"op"}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "secretfs_build_info", Help: "The version of secretfs and of Go it was built with.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	m.leaseRenewals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "secretfs_lease_renewals_total", Help: "Renewals of leases (Vault dynamic secrets), by provider and result."}, []string{"provider", "result"})
	m.leaseReplaced = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "secretfs_lease_reissues_total", Help: "Leased values replaced by a new one ahead of their end, by provider."}, []string{"provider"})
	m.onChangeRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "secretfs_on_change_runs_total", Help: "On-change commands run and signals sent, by result: ok, failed, timeout, refused."}, []string{"result"})
	m.reg.MustRegister(m.backendRequests, m.backendDuration, m.staleServed, m.fuseRequests, build, m.leaseRenewals, m.leaseReplaced, m.onChangeRuns)
	return m
}

// BackendCall implements cache.Observer.
func (m *Metrics) BackendCall(provider, result string, d time.Duration) {
	m.backendRequests.WithLabelValues(provider, result).Inc()
	m.backendDuration.WithLabelValues(provider).Observe(d.Seconds())
}

// StaleServed implements cache.Observer.
func (m *Metrics) StaleServed(provider string, past time.Duration) {
	m.staleServed.WithLabelValues(provider).Observe(past.Seconds())
}

// LeaseRenewed implements cache.LeaseObserver.
func (m *Metrics) LeaseRenewed(provider, result string) {
	m.leaseRenewals.WithLabelValues(provider, result).Inc()
}

// LeaseReplaced implements cache.LeaseObserver.
func (m *Metrics) LeaseReplaced(provider string) { m.leaseReplaced.WithLabelValues(provider).Inc() }

// WatchLeases adds the leases the cache holds: how many, and the seconds
// until the nearest ends.
func (m *Metrics) WatchLeases(leases func() cache.LeaseStats) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "secretfs_leases_held", Help: "Leased values held whose lease has not ended."},
			func() float64 { return float64(leases().Held) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "secretfs_lease_nearest_expiry_seconds", Help: "Seconds until the nearest end of a lease held; 0 when none."},
			func() float64 {
				if n := leases().Nearest; !n.IsZero() {
					return max(time.Until(n).Seconds(), 0)
				}
				return 0
			}))
}

// FUSERequest counts one request of op that reached secretfs.
func (m *Metrics) FUSERequest(op string) { m.fuseRequests.WithLabelValues(op).Inc() }

// OnChangeRun counts an on-change run by its result.
func (m *Metrics) OnChangeRun(result string) { m.onChangeRuns.WithLabelValues(result).Inc() }

// Engine is what the metrics read of the cache.
type Engine interface {
	Stats() cache.Stats
	Len() (values, negatives int)
	Down(provider string) bool
}

// Watch adds the cache's counters and each provider's health.
func (m *Metrics) Watch(e Engine, providers []string) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "secretfs_cache_hits_total", Help: "Reads served fresh from memory."},
			func() float64 { return float64(e.Stats().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "secretfs_cache_misses_total", Help: "Reads that waited for a backend call."},
			func() float64 { return float64(e.Stats().Misses) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "secretfs_cache_stale_total", Help: "Values served past their expiry while a backend was unavailable."},
			func() float64 { return float64(e.Stats().Stale) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "secretfs_cache_entries", Help: "Values, listings and negative answers held."},
			func() float64 { v, n := e.Len(); return float64(v + n) }),
	)
	for _, p := range providers {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "secretfs_provider_up", Help: "1 while the provider answers, 0 while it is found down.",
			ConstLabels: prometheus.Labels{"provider": p},
		}, func() float64 {
			if e.Down(p) {
				return 0
			}
			return 1
		}))
	}
}

// WatchAudit adds the count of audit records that could not be written
// (each failed the read that needed it).
func (m *Metrics) WatchAudit(failures func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "secretfs_audit_write_failures_total", Help: "Audit records that could not be written; each refused its read.",
	}, func() float64 { return float64(failures()) }))
}

// WatchLocked adds the locked memory of --mlock: the bytes locked and
// the values that found none (each failed its read).
func (m *Metrics) WatchLocked(stats func() locked.Stats) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "secretfs_locked_bytes", Help: "Memory locked for values (--mlock)."},
			func() float64 { return float64(stats().Locked) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "secretfs_locked_failures_total", Help: "Values that found no locked memory (--mlock); each failed its read."},
			func() float64 { return float64(stats().Failures) }),
	)
}

// Handler serves /metrics and /healthz: 200 "ok" while healthy answers nil
// within 2s, else 503.
func (m *Metrics) Handler(healthy func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := healthy(ctx); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// Server is a running metrics endpoint.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Serve listens on addr (HOST:PORT) and serves h until Close.
func Serve(addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go s.srv.Serve(ln) // ends with Close

	return s, nil
}

// Addr is where it listens.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops it, waiting up to a second for requests under way.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}

// WatchExec adds the count of exec provider calls refused, never run,
// because their program changed or is no longer trusted.
func (m *Metrics) WatchExec(refused func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "secretfs_exec_refused_total", Help: "Exec provider calls refused, never run: the program changed since it was checked, or is no longer trusted.",
	}, func() float64 { return float64(refused()) }))
}
