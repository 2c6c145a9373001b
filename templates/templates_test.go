package templates

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/secretfs/secretfs/resolver"
)

func TestRender(t *testing.T) {
	values := map[string]string{"env:A": "alpha", "aws:db": `{"user":"app","password":"p\"w$x"}`}
	get := func(ctx context.Context, ref resolver.Reference) ([]byte, error) {
		v, ok := values[ref.Provider+":"+ref.Key]
		if !ok {
			return nil, resolver.ErrNotFound
		}
		s, err := resolver.Cut(ref, resolver.Secret{Value: []byte(v)})
		return s.Value, err
	}
	tm, err := Parse("t", "", `A={{ secret "env:A" | quote }}
PW={{ secret "aws:db#password" | quote }}
{{ dict "a" (secret "env:A") | toJSON }} {{ "x" | b64enc }} {{ squote "it's" }}`)
	if err != nil {
		t.Fatal(err)
	}
	out, refs, err := tm.Render(context.Background(), get)
	if err != nil {
		t.Fatal(err)
	}
	want := "A=\"alpha\"\nPW=\"p\\\"w\\$x\"\n{\"a\":\"alpha\"} eA== 'it'\\''s'"
	if string(out) != want {
		t.Errorf("render = %q, want %q", out, want)
	}
	if fmt.Sprint(refs) != "[env:A aws:db#password]" {
		t.Errorf("refs = %v, want the two it read, once each", refs)
	}
	miss, _ := Parse("m", "", `{{ secret "env:NOPE" }}`)
	_, _, err = miss.Render(context.Background(), func(ctx context.Context, ref resolver.Reference) ([]byte, error) {
		return nil, resolver.ErrNotFound
	})
	if !errors.Is(err, resolver.ErrNotFound) || !strings.Contains(err.Error(), "env:NOPE") {
		t.Errorf("a missing secret: %v, want not found naming the ref", err)
	}
	for _, bad := range []string{`{{ env "HOME" }}`, `{{ expandenv "$HOME" }}`, `{{ getHostByName "x" }}`, "line one\n{{ secret }"} {
		if _, err := Parse("bad", "/etc/t.tmpl", bad); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
	if _, err := Parse("bad", "/etc/t.tmpl", "line one\n{{ secret }"); !strings.Contains(err.Error(), "/etc/t.tmpl:2") {
		t.Errorf("a syntax error: %v, want FILE:LINE", err)
	}
}

func TestQuoteReadsBackInAShell(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	for _, v := range []string{`plain`, `with "quotes"`, `$HOME and ${X}`, "back\\slash", "two\nlines", "tick`s`", "it's", "  spaced  "} {
		for name, q := range map[string]func(any) string{"quote": Quote, "squote": SingleQuote} {
			out, err := exec.Command("sh", "-c", "printf %s "+q(v)).Output()
			if err != nil || string(out) != v {
				t.Errorf("%s(%q): the shell read back %q, %v", name, v, out, err)
			}
		}
	}
}
