package resolver_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/secretfs/secretfs/resolver"
)

// upperProvider is a custom provider: any Go type with Name and Get. This
// one serves the upper-cased key, and has no versions.
type upperProvider struct{}

func (upperProvider) Name() string { return "upper" }

func (upperProvider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	if version != "" {
		return resolver.Secret{}, fmt.Errorf("upper %s@%s: %w", key, version, resolver.ErrNotFound)
	}
	return resolver.Secret{Value: []byte(strings.ToUpper(key))}, nil
}

// A custom provider plugs into the resolver like the built-in ones; the
// resolver adds #FIELD and the exact-name rule for "@" on top of it.
func Example_customProvider() {
	r, err := resolver.New(upperProvider{})
	if err != nil {
		panic(err)
	}
	ref, _ := resolver.Parse("upper:hello/world")
	s, err := r.Get(context.Background(), ref)
	fmt.Println(string(s.Value), err)

	_, err = r.Get(context.Background(), resolver.Reference{Provider: "upper", Key: "x", Field: "f"})
	fmt.Println(err)
	// Output:
	// HELLO/WORLD <nil>
	// upper:x#f: secret not found: field "f": value is not a JSON object
}
