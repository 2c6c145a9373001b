package resolver_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/secretfs/secretfs/resolver"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want resolver.Reference
	}{
		{"env:API_KEY", resolver.Reference{Provider: "env", Key: "API_KEY"}},
		{"aws:prod/db-password", resolver.Reference{Provider: "aws", Key: "prod/db-password"}},
		{"aws:prod/db@AWSPREVIOUS", resolver.Reference{Provider: "aws", Key: "prod/db", Version: "AWSPREVIOUS"}},
		{"vault:secret/myapp#password", resolver.Reference{Provider: "vault", Key: "secret/myapp", Field: "password"}},
		{"vault:secret/myapp@3#password", resolver.Reference{Provider: "vault", Key: "secret/myapp", Version: "3", Field: "password"}},
		{"aws:user@example.com@v1", resolver.Reference{Provider: "aws", Key: "user@example.com", Version: "v1"}},
		{"aws:team@x/db", resolver.Reference{Provider: "aws", Key: "team@x/db"}},
		{"aws:app@", resolver.Reference{Provider: "aws", Key: "app"}},
		{"env:J#a#b@c", resolver.Reference{Provider: "env", Key: "J", Field: "a#b@c"}},
		{"my-prov_2:k", resolver.Reference{Provider: "my-prov_2", Key: "k"}},
		{"env:a:b", resolver.Reference{Provider: "env", Key: "a:b"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := resolver.Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			again, err := resolver.Parse(got.String())
			if err != nil || again != got {
				t.Errorf("Parse(%q.String() = %q) = %+v, %v; want %+v", tt.in, got.String(), again, err, got)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	for _, in := range []string{
		"", "noprovider", ":key", "env:", "env:#f", "env:k#", "Env:k", "e nv:k",
		"env:/abs", "env:trail/", "env:a//b", "env:a/../b", "env:./a", "env:a\x00b", "env:@v",
	} {
		t.Run(in, func(t *testing.T) {
			_, err := resolver.Parse(in)
			if !errors.Is(err, resolver.ErrInvalidReference) {
				t.Errorf("Parse(%q) error = %v, want ErrInvalidReference", in, err)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		ref  resolver.Reference
		want string
	}{
		{resolver.Reference{Provider: "env", Key: "A"}, "env:A"},
		{resolver.Reference{Provider: "aws", Key: "a@b"}, "aws:a@b@"},
		{resolver.Reference{Provider: "aws", Key: "a", Version: "v", Field: "f"}, "aws:a@v#f"},
	}
	for _, tt := range tests {
		if got := tt.ref.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.ref, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, ref := range []resolver.Reference{
		{Provider: "env", Key: "a#b"},
		{Provider: "env", Key: "a", Version: "x@y"},
		{Provider: "env", Key: "a", Version: "x/y"},
		{Provider: "", Key: "a"},
		{Provider: "env", Key: ""},
		{Provider: "env", Key: "a", Version: "v\x00refresh"},
		{Provider: "env", Key: strings.Repeat("k", resolver.MaxKeyLen+1)},
		{Provider: "env", Key: "a", Version: strings.Repeat("v", resolver.MaxVersionLen+1)},
	} {
		if err := ref.Validate(); !errors.Is(err, resolver.ErrInvalidReference) {
			t.Errorf("%+v.Validate() = %v, want ErrInvalidReference", ref, err)
		}
	}
}

// FuzzParse checks that every reference Parse accepts formats back to
// itself. The corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"env:A", "aws:a/b@AWSPREVIOUS", "vault:s/m@3#f", "aws:x@y@z", "aws:t@x/y", "a:b@", "a:b#c#d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := resolver.Parse(s)
		if err != nil {
			if !errors.Is(err, resolver.ErrInvalidReference) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalidReference", s, err)
			}
			return
		}
		if err := ref.Validate(); err != nil {
			t.Fatalf("Parse(%q) = %+v, which does not validate: %v", s, ref, err)
		}
		again, err := resolver.Parse(ref.String())
		if err != nil || again != ref {
			t.Fatalf("Parse(%q) = %+v; Parse(String() = %q) = %+v, %v", s, ref, ref.String(), again, err)
		}
	})
}
