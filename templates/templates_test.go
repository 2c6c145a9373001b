package templates

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
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

// A render keeps the kind of every failure: a secret that could not be read (with its own
// error), a limit, a failed function, a context that ended.
func TestRenderInAWorker(t *testing.T) {
	get := func(_ context.Context, ref resolver.Reference) ([]byte, error) {
		if ref.Key == "gone" {
			return nil, fmt.Errorf("%w: gone", resolver.ErrNotFound)
		}
		return []byte("v-" + ref.Key), nil
	}
	for _, tt := range []struct {
		text    string
		want    string
		wantErr error
	}{
		{`a={{ secret "env:A" | quote }} b={{ secret "env:B" }}`, `a="v-A" b=v-B`, nil},
		{`{{ secret "env:gone" }}`, "", resolver.ErrNotFound},
		{`{{ if false }}{{ secret "env:gone" }}{{ end }}ok`, "ok", nil},
		{`{{ repeat 300000000 "x" }}`, "", ErrLimit},
		{`{{ fail "boom" }}`, "", ErrRender},
		// The worker's own bounds hold: a list of 1,000 references to
		// one 3 MB string, printed.
		{`{{ $s := repeat 3000000 "x" }}{{ $l := list }}{{ range 1000 }}{{ $l = append $l $s }}{{ end }}{{ $l }}`, "", ErrLimit},
	} {
		t.Run(tt.text, func(t *testing.T) {
			tmpl, err := Parse("t", "", tt.text)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			out, _, err := tmpl.Render(context.Background(), get)
			if string(out) != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Render = %q, %v; want %q, %v", out, err, tt.want, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "xxxx") {
				t.Errorf("the error quotes a value: %.200s", err)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("took %v", el)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tmpl, _ := Parse("t", "", `{{ secret "env:A" }}`)
	if _, _, err := tmpl.Render(ctx, get); !errors.Is(err, context.Canceled) {
		t.Errorf("Render with an ended context = %v, want context.Canceled", err)
	}
}

// The daemon and the worker each parse the text; the worker takes values
// by reference, never by position (the order of a parse's references
// followed a map's once). The worker is given the values in the reverse of
// its own order, and each still lands in its place.
func TestValuesGoByReference(t *testing.T) {
	text := `{{ define "a" }}{{ secret "p:user" }}{{ end }}{{ define "b" }}{{ secret "p:pass" }}{{ end }}{{ define "c" }}{{ secret "p:host" }}{{ end }}user={{ template "a" }} pass={{ template "b" }} host={{ template "c" }}`
	tmpl, err := Parse("x", "", text)
	if err != nil {
		t.Fatal(err)
	}
	j := job{Name: "x", Text: text}
	refs := tmpl.Refs()
	for i := len(refs) - 1; i >= 0; i-- {
		j.Refs = append(j.Refs, refs[i].String())
		j.Values = append(j.Values, []byte(strings.ToUpper(refs[i].Key)))
		j.Failed = append(j.Failed, false)
	}
	var in, out bytes.Buffer
	if err := gob.NewEncoder(&in).Encode(&j); err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(os.Args[0], WorkerCommand) // this test binary, as TestMain serves
	serve.Stdin, serve.Stdout = &in, &out
	if err := serve.Run(); err != nil {
		t.Fatal(err)
	}
	var a answer
	if err := gob.NewDecoder(&out).Decode(&a); err != nil {
		t.Fatal(err)
	}
	if got, want := string(a.Out), "user=USER pass=PASS host=HOST"; got != want || a.Kind != "" {
		t.Errorf("render = %q (%s %s), want %q", got, a.Kind, a.Msg, want)
	}
	// And every parse lists them in one order.
	for range 20 {
		again, _ := Parse("x", "", text)
		if got, want := fmt.Sprint(again.Refs()), fmt.Sprint(refs); got != want {
			t.Fatalf("Refs = %s, then %s", want, got)
		}
	}
}

// A template that calls itself spends a step each time, the root too, so
// that recursion ends at MaxSteps with a clear message, not at the
// worker's deadline.
func TestRecursionIsCounted(t *testing.T) {
	text := `{{ $n := . | default 0 }}{{ if lt $n 40 }}{{ template "root" (add $n 1) }}{{ template "root" (add $n 1) }}{{ end }}`
	for _, parse := range []func(string, string, string) (*Template, error){Parse, ParseUntrusted} {
		tmpl, err := parse("x", "root", text)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = tmpl.Render(context.Background(), nil)
		if errors.Is(err, ErrLimit) && strings.Contains(err.Error(), "took longer than") {
			// 200,000 calls take about 0.7 s under -race; a machine loaded
			// enough to take WorkerWall tells nothing of the count.
			t.Skipf("the worker's wall clock came before the step count (a loaded machine): %v", err)
		}
		if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "template calls") {
			t.Errorf("a root that calls itself: %v, want ErrLimit at MaxSteps", err)
		}
	}
}

// Values no template may hold never leave the daemon: a class that names
// 32 secrets of 5 MiB (in a branch never taken) is refused before they are
// copied for the worker.
func TestOversizedValuesStayInTheDaemon(t *testing.T) {
	var b strings.Builder
	for i := range 32 {
		fmt.Fprintf(&b, `{{ if false }}{{ secret "p:k%d" }}{{ end }}`, i)
	}
	tmpl, err := ParseUntrusted("x", "", b.String())
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, MaxSize+1<<20)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err = tmpl.Render(context.Background(), func(context.Context, resolver.Reference) ([]byte, error) { return big, nil })
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrLimit) {
		t.Errorf("32 values of 5 MiB: %v, want ErrLimit", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
		t.Errorf("the daemon allocated %d MiB, want the values refused before any copy", got>>20)
	}
}

// A worker that cannot start is secretfs's failure, not the template's:
// neither a limit nor a render error (which CSI reports as the class's).
func TestWorkerThatCannotStartIsNotTheTemplates(t *testing.T) {
	w := worker.Load()
	t.Cleanup(func() { worker.Store(w) })
	UseWorker([]string{"/nonexistent/secretfs", WorkerCommand})
	tmpl, err := Parse("x", "", `plain`)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err = tmpl.Render(context.Background(), nil); err == nil || errors.Is(err, ErrLimit) || errors.Is(err, ErrRender) {
		t.Errorf("a worker that cannot start: %v, want an error of its own kind", err)
	}
}
