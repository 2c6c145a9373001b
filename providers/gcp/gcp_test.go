package gcp

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/secretfs/secretfs/resolver"
)

func TestErrorsAreClassified(t *testing.T) {
	p, err := New(Config{Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		err  error
		kind resolver.Kind
	}{
		{status.Error(codes.NotFound, "x"), resolver.KindNotFound},
		{status.Error(codes.FailedPrecondition, "disabled"), resolver.KindNotFound},
		{status.Error(codes.PermissionDenied, "x"), resolver.KindPermission},
		{status.Error(codes.Unauthenticated, "x"), resolver.KindUnavailable},
		{status.Error(codes.Unavailable, "x"), resolver.KindUnavailable},
		{status.Error(codes.DeadlineExceeded, "x"), resolver.KindUnavailable},
		{status.Error(codes.ResourceExhausted, "x"), resolver.KindUnavailable},
		{context.DeadlineExceeded, resolver.KindUnavailable},
		{context.Canceled, resolver.KindCanceled},
		{status.Error(codes.Unimplemented, "x"), resolver.KindUnknown},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			got := p.mapError("op", "k", tc.err)
			if k := resolver.KindOf(got); k != tc.kind {
				t.Errorf("%v: kind %v, want %v", tc.err, k, tc.kind)
			}
		})
	}
	if err := p.mapError("op", "k", status.Error(codes.ResourceExhausted, "x")); !errors.Is(err, resolver.ErrThrottled) {
		t.Errorf("RESOURCE_EXHAUSTED: %v, want ErrThrottled", err)
	}
}

// Names and versions that cannot exist are not found without a call (the
// provider has no client: a call would fail otherwise).
func TestNamesCheckedWithoutACall(t *testing.T) {
	p, _ := New(Config{Project: "p", Endpoint: "127.0.0.1:1", Insecure: true})
	for _, tc := range []struct{ key, version string }{{"a/b", ""}, {"x", "v1"}, {"x", "0"}, {"", ""}, {"x", "-1"}} {
		if _, err := p.Get(context.Background(), tc.key, tc.version); !errors.Is(err, resolver.ErrNotFound) {
			t.Errorf("Get(%q, %q): %v, want not found", tc.key, tc.version, err)
		}
	}
	if _, err := p.List(context.Background(), "dir"); !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("List(dir): %v, want not found", err)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Project: "my-project"}, true},
		{Config{Project: ""}, false},
		{Config{Project: "p", Insecure: true}, false},
		{Config{Project: "p", Endpoint: "127.0.0.1:8085", Insecure: true}, true},
		{Config{Project: "p", Endpoint: "[::1]:8085", Insecure: true}, true},
		{Config{Project: "p", Endpoint: "localhost:8085", Insecure: true}, true},
		{Config{Project: "p", Endpoint: "10.0.0.1:8085", Insecure: true}, false},
		{Config{Project: "p", Endpoint: "secretmanager.googleapis.com:443", Insecure: true}, false},
	} {
		if _, err := New(tc.cfg); (err == nil) != tc.ok {
			t.Errorf("New(%+v): %v, want ok %v", tc.cfg, err, tc.ok)
		}
	}
}

// Two more tries of what is retryable, then the engine decides.
func TestRetries(t *testing.T) {
	r := &retryer{}
	for i, want := range []bool{true, true, false} {
		if _, ok := r.Retry(status.Error(codes.Unavailable, "x")); ok != want {
			t.Errorf("try %d after UNAVAILABLE: retry %v, want %v", i+1, ok, want)
		}
	}
	if _, ok := (&retryer{}).Retry(status.Error(codes.NotFound, "x")); ok {
		t.Error("NOT_FOUND retried")
	}
}

func TestOAuthError(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"error":"invalid_grant","error_description":"The audience does not match."}`, "invalid_grant"},
		{`{"error":{"code":403,"status":"PERMISSION_DENIED","message":"denied"}}`, "PERMISSION_DENIED"},
		{`{"error":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}`, ""}, // an echoed token is no code
		{`not json`, ""},
		{``, ""},
	} {
		if got := oauthError([]byte(tc.body)); got != tc.want {
			t.Errorf("oauthError(%s) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

func TestExchangeStatus(t *testing.T) {
	for _, tc := range []struct {
		err  string
		code int
	}{
		{`credentials: status code 403: {"error":{"status":"PERMISSION_DENIED"}}`, 403},
		{`impersonate: status code 400: {"error":"invalid_grant"}`, 400},
		{"credentials: status code 503: upstream said \"credentials: status code 403: x\"", 503},
		// A 200 whose content the library could not parse is no refusal.
		{`credentials: unable to parse expiry: parsing time "status code 403: x"`, 0},
		{`Post "https://sts.example/v1/token": EOF`, 0},
	} {
		if got, _ := exchangeStatus(errors.New(tc.err)); got != tc.code {
			t.Errorf("exchangeStatus(%q) = %d, want %d", tc.err, got, tc.code)
		}
	}
}
