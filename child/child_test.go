package child

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

func TestEnvName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"api-key", "API_KEY"},
		{"db/password", "DB_PASSWORD"},
		{"tls.crt", "TLS_CRT"},
		{"Mixed/Case-x", "MIXED_CASE_X"},
		{"9lives", ""},
		{"has space", ""},
		{"ünï", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := EnvName(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("EnvName(%q) = %q, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("EnvName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// engine serves values by "provider:key" and listings by "provider:dir".
type engine struct {
	values   map[string]string
	listings map[string][]string
}

func (e engine) Get(_ context.Context, ref resolver.Reference) (cache.Value, error) {
	v, ok := e.values[ref.String()]
	if !ok {
		return cache.Value{}, fmt.Errorf("%s: %w", ref, resolver.ErrNotFound)
	}
	return cache.Value{Secret: resolver.Secret{Value: []byte(v)}}, nil
}

func (e engine) List(_ context.Context, provider, dir string) (*cache.Listing, time.Duration, error) {
	names, ok := e.listings[provider+":"+dir]
	if !ok {
		return nil, 0, resolver.ErrNotFound
	}
	return cache.NewListing(names), 0, nil
}

func (engine) Hold(resolver.Reference) func() { return func() {} }
func (engine) OnChange(func(cache.Change))    {}

func TestResolve(t *testing.T) {
	eng := engine{
		values: map[string]string{"p:db": "pw", "p:app/api-key": "k", "p:app/sub/region": "eu", "p:clash/a-b": "1", "p:clash/a_b": "2"},
		listings: map[string][]string{
			"p:app": {"api-key", "sub/"}, "p:app/sub": {"region"}, "p:clash": {"a-b", "a_b"},
		},
	}
	db := resolver.Reference{Provider: "p", Key: "db"}
	env, err := Resolve(context.Background(), eng, []Var{{"DB", db}}, []Dir{{"p", "app"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := env.Names, []string{"API_KEY", "DB", "SUB_REGION"}; !slices.Equal(got, want) {
		t.Errorf("names = %q, want %q", got, want)
	}
	if got := string(env.Vals["SUB_REGION"]); got != "eu" {
		t.Errorf("SUB_REGION = %q, want eu", got)
	}

	for _, tc := range []struct {
		name string
		vars []Var
		dirs []Dir
		is   error
	}{
		{"a collision in a directory", nil, []Dir{{"p", "clash"}}, ErrName},
		{"a name given twice", []Var{{"API_KEY", db}}, []Dir{{"p", "app"}}, ErrName},
		{"a missing secret", []Var{{"X", resolver.Reference{Provider: "p", Key: "nope"}}}, nil, resolver.ErrNotFound},
		{"a missing directory", nil, []Dir{{"p", "nowhere"}}, resolver.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(context.Background(), eng, tc.vars, tc.dirs)
			if !errors.Is(err, tc.is) {
				t.Fatalf("Resolve: %v, want %v", err, tc.is)
			}
			if strings.Contains(fmt.Sprint(err), "pw") {
				t.Errorf("the error holds a value: %v", err)
			}
		})
	}
}

func TestEnviron(t *testing.T) {
	env := Env{Names: []string{"A", "B"}, Vals: map[string][]byte{"A": []byte("1"), "B": []byte("2")}}
	got, err := Environ([]string{"PATH=/bin", "C=3"}, env, false)
	if want := []string{"PATH=/bin", "C=3", "A=1", "B=2"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Environ = %q, %v; want %q", got, err, want)
	}
	if _, err := Environ([]string{"A=old"}, env, false); !errors.Is(err, ErrName) {
		t.Errorf("a name already set: %v, want ErrName", err)
	}
	got, err = Environ([]string{"A=old"}, env, true)
	if want := []string{"A=1", "B=2"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("with override = %q, %v; want %q", got, err, want)
	}
}
