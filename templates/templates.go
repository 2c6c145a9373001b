// Package templates renders several secrets into one file: a .env, a JSON
// or YAML config, a PEM bundle, a .pgpass.
//
// A template is Go text/template with missingkey=error and these functions:
//
//	secret "REF"   the value of REF, any provider, the usual grammar: {{ secret "aws:prod/rds#password" }}
//	quote          "…" for a POSIX shell or a dotenv file: ", $, `, \ are escaped, so the exact value reads back
//	squote         '…' for a POSIX shell: a ' inside becomes '\''
//	toJSON, toYAML, b64enc, b64dec, trim, default, …
//
// and the rest of sprig v3's hermetic functions, without env, expandenv
// and getHostByName: the env provider stays the only door to the
// environment. A render reads every secret through the engine, so it is
// served from its cache and obeys its stale rules.
package templates

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"go.yaml.in/yaml/v3"

	"github.com/secretfs/secretfs/resolver"
)

// Template is one parsed template.
type Template struct {
	Name   string
	Source string // the file it came from, or "" for inline text
	UID    *uint32
	GID    *uint32
	Mode   *uint32
	text   string // as parsed: a render worker parses it again
	tmpl   *template.Template
	refs   []resolver.Reference
	// untrusted: the short list of functions (ParseUntrusted).
	untrusted bool
}

// Getter reads a secret's value (the engine's Get).
type Getter func(ctx context.Context, ref resolver.Reference) ([]byte, error)

// Parse parses text. A syntax error names FILE:LINE (or NAME:LINE); so does
// a secret call whose argument is not one quoted reference.
func Parse(name, source, text string) (*Template, error) {
	return parseTemplate(name, source, text, false)
}

// ParseUntrusted parses a template from someone the process does not
// trust (a SecretProviderClass's author): it gets the short list of
// functions of limits.go, not all of sprig's.
func ParseUntrusted(name, source, text string) (*Template, error) {
	return parseTemplate(name, source, text, true)
}

func parseTemplate(name, source, text string, untrusted bool) (*Template, error) {
	label := name
	if source != "" {
		label = source
	}
	fm := funcs(context.Background(), nil, untrusted)
	fm["secret"] = func(string) (string, error) { return "", nil } // bound per render
	tmpl, err := template.New(label).Option("missingkey=error").Funcs(fm).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	t := &Template{Name: name, Source: source, text: text, tmpl: tmpl, untrusted: untrusted}
	lits, err := check(tmpl, func(s string) error { _, err := resolver.Parse(s); return err })
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	for _, l := range lits {
		ref, _ := resolver.Parse(l)
		if !slices.Contains(t.refs, ref) {
			if len(t.refs) == MaxRefs {
				return nil, fmt.Errorf("template %s: %w: more than %d secrets", name, ErrLimit, MaxRefs)
			}
			t.refs = append(t.refs, ref)
		}
	}
	return t, nil
}

// MaxRefs is the most secrets one template may name, and fetchers how
// many it fetches at once: every one is fetched at each render, used or
// not, with the credentials of whoever mounts it.
const (
	MaxRefs  = 256
	fetchers = 8
)

// Refs are the references the template may read, known from its text.
func (t *Template) Refs() []resolver.Reference { return slices.Clone(t.refs) }

// ParseFile parses the template in path.
func ParseFile(name, path string) (*Template, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	return Parse(name, path, string(data))
}

// Render renders t, reading secrets with get, in a render worker (see
// worker.go; UseWorker says how to start one), until ctx ends. It
// returns what it read: every secret the template names. An error names
// the reference, never a value: where a render fails for another reason,
// the error says where and leaves out why (a function's message, or the
// engine's, may quote a value).
//
// The secrets are fetched first, all of them at once, outside any render
// slot (each under the engine's rules and ctx); then the text is rendered
// with no I/O. The slots bound the workers at once: a slow backend never
// delays a template that does not read it.
func (t *Template) Render(ctx context.Context, get Getter) ([]byte, []resolver.Reference, error) {
	w := worker.Load()
	if w == nil {
		return nil, nil, fmt.Errorf("template %s: %w: no render worker (a render never runs in this process)", t.Name, ErrRender)
	}
	vals := make([]fetched, len(t.refs))
	var wg sync.WaitGroup
	slots := make(chan struct{}, fetchers)
	for i, ref := range t.refs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			v, err := get(ctx, ref)
			vals[i] = fetched{v, err}
		})
	}
	wg.Wait()
	select {
	case renders <- struct{}{}:
		defer func() { <-renders }()
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("template %s: waiting for a render slot: %w", t.Name, ctx.Err())
	}
	out, err := t.renderInWorker(ctx, *w, vals)
	return out, slices.Clone(t.refs), err
}

// fetched is a secret's value as read for a render, or why it could not be.
type fetched struct {
	v   []byte
	err error
}

// execute renders t in this process with the values read: only a render
// worker does.
func (t *Template) execute(ctx context.Context, vals []fetched) ([]byte, error) {
	tmpl, err := t.tmpl.Clone()
	if err != nil {
		return nil, err
	}
	steps := 0
	fm := funcs(ctx, &steps, t.untrusted)
	fm["secret"] = func(s string) (string, error) {
		ref, err := resolver.Parse(s)
		if err != nil || !slices.Contains(t.refs, ref) {
			// Parse lets only literals through; this is the second lock.
			return "", errors.New("secret: not a reference of the template's text")
		}
		got := vals[slices.Index(t.refs, ref)]
		v, err := got.v, got.err
		if err != nil {
			return "", &secretError{ref: ref, err: err}
		}
		if len(v) > MaxSize {
			return "", limitErr("%s: a value of more than %d bytes", ref, MaxSize)
		}
		return string(v), nil
	}
	tmpl.Funcs(fm)
	out := limitedBuffer{max: MaxSize}
	if err := tmpl.Execute(&out, nil); err != nil {
		return nil, fmt.Errorf("template %s: %w", t.Name, withheld(err))
	}
	return out.b, nil
}

// secretError is a reference that could not be read: it names the
// reference (a literal of the template) and keeps the engine's error.
type secretError struct {
	ref resolver.Reference
	err error
}

func (e *secretError) Error() string { return e.ref.String() + ": " + e.err.Error() }
func (e *secretError) Unwrap() error { return e.err }

// ErrRender is a render that failed in a function or in the template
// itself (not in reading a secret).
var ErrRender = errors.New("render failed")

// withheld keeps where a render failed and what kind of failure it was,
// and leaves out any text that could quote a value: a reference that
// could not be read (the template's own literal) and the engine's error,
// a limit, or the context; otherwise, the place in the template.
func withheld(err error) error {
	var se *secretError
	if errors.As(err, &se) || errors.Is(err, ErrLimit) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		var ee template.ExecError
		if errors.As(err, &ee) {
			return fmt.Errorf("%s: %w", where(ee.Error()), errors.Unwrap(ee.Err))
		}
		return err
	}
	return fmt.Errorf("%w: %s: the reason is left out (it may quote a value)", ErrRender, where(err.Error()))
}

// where is the place an execution error names ("template: NAME:LINE:COL:
// executing "NAME" at <SOURCE>"), without what follows.
func where(msg string) string {
	if i := strings.Index(msg, " at <"); i >= 0 {
		if j := strings.Index(msg[i:], ">: "); j >= 0 {
			return msg[:i+j+1]
		}
	}
	if i := strings.Index(msg, ": "); i >= 0 {
		return msg[:i]
	}
	return msg
}

// base is the function map before limits: sprig's hermetic functions
// (without env, expandenv, getHostByName) and secretfs's own.
var base = baseFunctions()

func baseFunctions() template.FuncMap {
	f := sprig.HermeticTxtFuncMap()
	f["quote"] = Quote
	f["squote"] = SingleQuote
	f["toJSON"] = func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	}
	f["toYAML"] = func(v any) (string, error) {
		b, err := yaml.Marshal(v)
		return strings.TrimSuffix(string(b), "\n"), err
	}
	return f
}

// Quote puts v in double quotes so that a POSIX shell (and a dotenv
// parser) reads back exactly v: \, ", $ and ` are escaped with a
// backslash; a newline stays a newline, which double quotes keep.
func Quote(v any) string {
	s := fmt.Sprint(v)
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ { // bytes: a value that is not UTF-8 reads back too
		switch s[i] {
		case '\\', '"', '$', '`':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// SingleQuote puts v in single quotes for a POSIX shell: a ' inside
// becomes '\”.
func SingleQuote(v any) string {
	return "'" + strings.ReplaceAll(fmt.Sprint(v), "'", `'\''`) + "'"
}
