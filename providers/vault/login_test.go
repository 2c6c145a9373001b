package vault

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// A provider that logs in never sends the VAULT_TOKEN of its environment,
// not even while its login fails, and reads nothing until a login works.
func TestLoginNeverSendsTheEnvironmentsToken(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, r.URL.Path+" token="+r.Header.Get("X-Vault-Token"))
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
	status = http.StatusBadRequest
	mu.Unlock()

	_, err = New(ctx, Config{Address: srv.URL, Auth: AuthJWT, Role: "x", JWT: func() (string, error) { return "pod-jwt", nil }})
	if !errors.Is(err, resolver.ErrPermission) {
		t.Fatalf("a refused login: %v, want permission denied", err)
	}
	if msg := err.Error(); len(msg) > 400 || strings.ContainsRune(msg, 0) || strings.Contains(msg, "pod-jwt") {
		t.Errorf("the refusal's message is not brief and clean: %q", msg)
	}
}
