package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/metrics"
)

type fakeEngine struct{ down bool }

func (f fakeEngine) Stats() cache.Stats        { return cache.Stats{Hits: 3, Misses: 2, Stale: 1} }
func (f fakeEngine) Len() (int, int)           { return 4, 1 }
func (f fakeEngine) Down(provider string) bool { return f.down && provider == "aws" }

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

func TestMetricsAndHealth(t *testing.T) {
	m := metrics.New("v1.2.3")
	m.Watch(fakeEngine{down: true}, []string{"aws", "env"})
	m.BackendCall("aws", "throttled", 3*time.Millisecond)
	m.BackendCall("env", "ok", time.Microsecond)
	m.StaleServed("aws", 90*time.Second)
	m.FUSERequest("lookup")
	healthy := true
	h := m.Handler(func(context.Context) error {
		if healthy {
			return nil
		}
		return errors.New("the mount does not answer")
	})
	code, body := get(t, h, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		"secretfs_cache_hits_total 3", "secretfs_cache_misses_total 2", "secretfs_cache_stale_total 1", "secretfs_cache_entries 5",
		`secretfs_backend_requests_total{provider="aws",result="throttled"} 1`,
		`secretfs_backend_requests_total{provider="env",result="ok"} 1`,
		`secretfs_backend_request_duration_seconds_count{provider="aws"} 1`,
		`secretfs_provider_up{provider="aws"} 0`, `secretfs_provider_up{provider="env"} 1`,
		`secretfs_fuse_requests_total{op="lookup"} 1`,
		`secretfs_build_info{goversion="go`, `version="v1.2.3"} 1`,
		`secretfs_stale_served_seconds_count{provider="aws"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	healthy = false
	if code, _ := get(t, h, "/healthz"); code != 503 {
		t.Errorf("/healthz while the mount does not answer = %d, want 503", code)
	}
}
