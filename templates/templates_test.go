package templates

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

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

// A slow backend never delays a template that does not read it: secrets
// are fetched outside the render slots. Six renders waiting on a slow
// provider once held every slot, and a template of env waited 5.2 s.
func TestSlowBackendDelaysNoOtherTemplate(t *testing.T) {
	release := make(chan struct{})
	get := func(ctx context.Context, ref resolver.Reference) ([]byte, error) {
		if ref.Provider == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return []byte("v"), nil
	}
	slow, err := Parse("slow", "", `{{ secret "slow:k" }}`)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := Parse("fast", "", `{{ secret "env:A" }}`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() { slow.Render(ctx, get) })
	}
	defer func() { close(release); wg.Wait() }()
	time.Sleep(50 * time.Millisecond) // the slow renders are under way
	start := time.Now()
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	defer fcancel()
	out, _, err := fast.Render(fctx, get)
	if err != nil || string(out) != "v" {
		t.Fatalf("a template of env beside six waiting on a slow backend: %q, %v", out, err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("it took %v, want no wait on the slow backend", el)
	}
}

// TestMain runs the tests' renders in render workers, as secretfs does:
// the test binary is the worker (`render-worker`).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == WorkerCommand {
		os.Exit(ServeWorker(os.Stdin, os.Stdout))
	}
	if os.Getenv("SECRETFS_TEMPLATES_IN_PROCESS") == "" { // to compare with limits.go alone
		UseWorker([]string{os.Args[0], WorkerCommand})
	}
	os.Exit(m.Run())
}
