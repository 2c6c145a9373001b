package vault

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// A provider that logs in never sends the VAULT_TOKEN of its environment,
// not even while its login fails, and reads nothing until a login works.
func TestLoginNeverSendsTheEnvironmentsToken(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	var loginOK atomic.Bool
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, r.URL.Path+" token="+r.Header.Get("X-Vault-Token"))
		if strings.HasSuffix(r.URL.Path, "/login") && loginOK.Load() {
			w.Write([]byte(`{"auth":{"client_token":"pod-token-from-login","lease_duration":3600,"renewable":false}}`))
			return
		}
		if strings.HasSuffix(r.URL.Path, "/login") {
			w.WriteHeader(status)
			w.Write([]byte(`{"errors":["role \"x\" could not be found` + strings.Repeat(" padding", 100) + `\u0000"]}`))
			return
		}
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"errors":["permission denied"]}`))
	}))
	defer srv.Close()
	t.Setenv("VAULT_TOKEN", "NODE-SECRET-TOKEN")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := New(ctx, Config{Address: srv.URL, Auth: AuthKubernetes, AuthMount: "kubernetes", Role: "x",
		JWT: func() (string, error) { return "pod-jwt", nil }})
	if err != nil {
		t.Fatalf("New while Vault is unavailable: %v, want the provider (login goes on in the background)", err)
	}
	defer p.Close()
	_, err = p.Get(ctx, "secret/x", "")
	if !errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("a read before any login: %v, want unavailable", err)
	}
	mu.Lock()
	for _, s := range sent {
		if strings.Contains(s, "NODE-SECRET-TOKEN") {
			t.Errorf("a request carried the environment's token: %s", s)
		}
	}
	// Vault is back: the next read logs in at once, not after the
	// background's back-off.
	status = http.StatusOK
	mu.Unlock()
	loginOK.Store(true)
	if _, err := p.Get(ctx, "secret/x", ""); errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("a read once Vault is back: %v, want it to log in and ask", err)
	}
	mu.Lock()
	if last := sent[len(sent)-1]; !strings.Contains(last, "token=pod-token-from-login") {
		t.Errorf("the read after the login sent %q, want the login's token", last)
	}
	status = http.StatusBadRequest
	mu.Unlock()
	loginOK.Store(false)

	_, err = New(ctx, Config{Address: srv.URL, Auth: AuthJWT, Role: "x", JWT: func() (string, error) { return "pod-jwt", nil }})
	if !errors.Is(err, resolver.ErrPermission) {
		t.Fatalf("a refused login: %v, want permission denied", err)
	}
	if msg := err.Error(); len(msg) > 400 || strings.ContainsRune(msg, 0) || strings.Contains(msg, "pod-jwt") {
		t.Errorf("the refusal's message is not brief and clean: %q", msg)
	}
}
