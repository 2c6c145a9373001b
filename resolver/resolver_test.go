package resolver_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// mapProvider serves a map; "slow" keys wait for the context.
type mapProvider struct {
	name     string
	data     map[string]string // by key (which may contain "@")
	versions map[string]string // by key@version, for a version asked for
	deny     map[string]bool   // keys that are denied
	calls    []string          // "key|version"
}

func (m *mapProvider) Name() string { return m.name }

func (m *mapProvider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	m.calls = append(m.calls, key+"|"+version)
	if m.deny[key] {
		return resolver.Secret{}, fmt.Errorf("%w: policy", resolver.ErrPermission)
	}
	switch key {
	case "slow":
		<-ctx.Done()
		return resolver.Secret{}, ctx.Err()
	case "denied":
		return resolver.Secret{}, fmt.Errorf("%w: policy", resolver.ErrPermission)
	}
	v, ok := m.data[key]
	if version != "" {
		v, ok = m.versions[key+"@"+version]
	}
	if !ok {
		return resolver.Secret{}, fmt.Errorf("%s: %w", key, resolver.ErrNotFound)
	}
	return resolver.Secret{Value: []byte(v), Version: version}, nil
}

func TestResolverGet(t *testing.T) {
	p := &mapProvider{name: "m", data: map[string]string{
		"plain":      "v1",
		"json":       `{"user":"bob","n":3,"o":{"a": [1, 2]},"nul":null,"s":"x\ny"}`,
		"a@b":        "exact",
		"a":          "current",
		"notjson":    "hello",
		"jsonarray":  `[1,2]`,
		"dir/nested": "deep",
	}, versions: map[string]string{"c@v2": "c two", "a@b": "a at version b"}}
	r, err := resolver.New(p)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ref     string
		want    string
		wantErr error
	}{
		{ref: "m:plain", want: "v1"},
		{ref: "m:dir/nested", want: "deep"},
		{ref: "m:json#user", want: "bob"},
		{ref: "m:json#n", want: "3"},
		{ref: "m:json#o", want: `{"a":[1,2]}`},
		{ref: "m:json#nul", want: "null"},
		{ref: "m:json#s", want: "x\ny"},
		{ref: "m:a@b", want: "exact"}, // the exact name wins
		{ref: "m:c@v2", want: "c two"},
		{ref: "m:json#missing", wantErr: resolver.ErrNotFound},
		{ref: "m:notjson#f", wantErr: resolver.ErrNotFound},
		{ref: "m:jsonarray#f", wantErr: resolver.ErrNotFound},
		{ref: "m:nope", wantErr: resolver.ErrNotFound},
		{ref: "m:c@v3", wantErr: resolver.ErrNotFound},
		{ref: "other:plain", wantErr: resolver.ErrUnknownProvider},
		{ref: "m:denied", wantErr: resolver.ErrPermission},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			ref, err := resolver.Parse(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			s, err := r.Get(context.Background(), ref)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Get(%s) error = %v, want %v", tt.ref, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Get(%s): %v", tt.ref, err)
			}
			if got := string(s.Value); got != tt.want {
				t.Errorf("Get(%s) = %q, want %q", tt.ref, got, tt.want)
			}
		})
	}
}

func TestResolverVersionFallsBackAfterExactName(t *testing.T) {
	p := &mapProvider{name: "m", versions: map[string]string{"c@v2": "c two"}}
	r, _ := resolver.New(p)
	if _, err := r.Get(context.Background(), resolver.Reference{Provider: "m", Key: "c", Version: "v2"}); err != nil {
		t.Fatal(err)
	}
	// First the exact name "c@v2" (a key), then key "c" at version "v2".
	if want := []string{"c@v2|", "c|v2"}; !slices.Equal(p.calls, want) {
		t.Errorf("calls = %q, want %q", p.calls, want)
	}
}

func TestExactNameDeniedStillReadsVersion(t *testing.T) {
	// A policy that grants "app" only denies the exact name "app@v1".
	p := &mapProvider{name: "m", versions: map[string]string{"app@v1": "old"}, deny: map[string]bool{"app@v1": true}}
	r, _ := resolver.New(p)
	s, err := r.Get(context.Background(), resolver.Reference{Provider: "m", Key: "app", Version: "v1"})
	if err != nil || string(s.Value) != "old" {
		t.Fatalf("Get(m:app@v1) = %q, %v; want the version", s.Value, err)
	}
	if want := []string{"app@v1|", "app|v1"}; !slices.Equal(p.calls, want) {
		t.Errorf("calls = %q, want %q (the exact name, then the version)", p.calls, want)
	}
}

func TestResolverTimeoutIsUnavailable(t *testing.T) {
	r, _ := resolver.New(&mapProvider{name: "m"})
	r.Deadlines = resolver.Deadlines{Call: 20 * time.Millisecond}
	start := time.Now()
	_, err := r.Get(context.Background(), resolver.Reference{Provider: "m", Key: "slow"})
	if !errors.Is(err, resolver.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want ErrUnavailable wrapping DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Get took %v despite a 20ms timeout", d)
	}
}

func TestResolverCanceledIsNotUnavailable(t *testing.T) {
	r, _ := resolver.New(&mapProvider{name: "m"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.Get(ctx, resolver.Reference{Provider: "m", Key: "slow"})
	if !errors.Is(err, context.Canceled) || errors.Is(err, resolver.ErrUnavailable) {
		t.Errorf("error = %v, want context.Canceled and not ErrUnavailable", err)
	}
}

func TestRegisterDuplicate(t *testing.T) {
	_, err := resolver.New(&mapProvider{name: "m"}, &mapProvider{name: "m"})
	if err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Errorf("New with a duplicate = %v, want an 'already registered' error", err)
	}
	if _, err := resolver.New(&mapProvider{name: "Bad Name"}); !errors.Is(err, resolver.ErrInvalidReference) {
		t.Errorf("New with a bad name = %v, want ErrInvalidReference", err)
	}
}

func TestList(t *testing.T) {
	r, _ := resolver.New(&mapProvider{name: "m"})
	if _, err := r.List(context.Background(), "m", ""); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("List on a provider without Lister = %v, want ErrUnsupported", err)
	}
	if _, err := r.List(context.Background(), "x", ""); !errors.Is(err, resolver.ErrUnknownProvider) {
		t.Errorf("List on an unknown provider = %v, want ErrUnknownProvider", err)
	}
}

func TestSecretNeverPrintsValue(t *testing.T) {
	s := resolver.Secret{Value: []byte("hunter2"), Version: "v1"}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s)} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("formatted secret %q contains the value", out)
		}
	}
}

func TestDeadlines(t *testing.T) {
	d := resolver.Deadlines{Call: 2 * time.Second, Own: map[string]time.Duration{"slowexec": 30 * time.Second}}
	for _, tt := range []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"a call", d.CallFor("aws"), 2 * time.Second},
		{"an exec entry's own timeout is honoured", d.CallFor("slowexec"), 30 * time.Second},
		{"a value", d.FetchFor(resolver.Reference{Provider: "aws", Key: "k"}), 2 * time.Second},
		{"a version: two calls, each its budget", d.FetchFor(resolver.Reference{Provider: "aws", Key: "k", Version: "v"}), 4 * time.Second},
		{"a request: twice a call", d.RequestFor("aws"), 4 * time.Second},
		{"a request of the exec provider", d.RequestFor("slowexec"), time.Minute},
		{"the default", resolver.Deadlines{}.CallFor("x"), resolver.DefaultTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}
