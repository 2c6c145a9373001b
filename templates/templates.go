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
	"strings"
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
	tmpl   *template.Template
}

// Getter reads a secret's value (the engine's Get).
type Getter func(ctx context.Context, ref resolver.Reference) ([]byte, error)

// Parse parses text. A syntax error names FILE:LINE (or NAME:LINE).
func Parse(name, source, text string) (*Template, error) {
	label := name
	if source != "" {
		label = source
	}
	funcs := functions()
	funcs["secret"] = func(string) (string, error) { return "", nil } // bound per render
	funcs[tickName] = func() (string, error) { return "", nil }       // bound per render
	tmpl, err := template.New(label).Option("missingkey=error").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	if err := instrument(tmpl); err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	return &Template{Name: name, Source: source, tmpl: tmpl}, nil
}

// ParseFile parses the template in path.
func ParseFile(name, path string) (*Template, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	return Parse(name, path, string(data))
}

// Render renders t, reading secrets with get, within the limits of
// MaxSize, MaxItems and MaxSteps, until ctx ends. It returns what it read.
// An error names the reference, never a value: a function's own message,
// which may quote its argument, is left out.
func (t *Template) Render(ctx context.Context, get Getter) ([]byte, []resolver.Reference, error) {
	var refs []resolver.Reference
	tmpl, err := t.tmpl.Clone()
	if err != nil {
		return nil, nil, err
	}
	tmpl.Funcs(template.FuncMap{tickName: stepper(ctx), "secret": func(s string) (string, error) {
		ref, err := resolver.Parse(s)
		if err != nil {
			return "", err
		}
		refs = append(refs, ref)
		v, err := get(ctx, ref)
		if err != nil {
			return "", fmt.Errorf("%s: %w", ref, err)
		}
		return string(v), nil
	}})
	var out limitedBuffer
	if err := tmpl.Execute(&out, nil); err != nil {
		return nil, refs, fmt.Errorf("template %s: %w", t.Name, withheld(err))
	}
	return out.b, refs, nil
}

// ErrRender is a render that failed in a function or in the template
// itself (not in reading a secret).
var ErrRender = errors.New("render failed")

// withheld keeps err when it is the engine's (a reference that could not
// be read, a limit, the context), whose messages name no value; otherwise
// it keeps where the template failed, and not a function's message.
func withheld(err error) error {
	if resolver.KindOf(err) != resolver.KindUnknown || errors.Is(err, ErrLimit) {
		return err
	}
	msg := err.Error()
	if i := strings.Index(msg, ": error calling "); i >= 0 {
		fn, _, _ := strings.Cut(msg[i+len(": error calling "):], ":")
		return fmt.Errorf("%w: %s: %s failed (its message is left out: it may quote a value)", ErrRender, msg[:i], fn)
	}
	return fmt.Errorf("%w: %s", ErrRender, msg)
}

func functions() template.FuncMap {
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
	return guarded(f)
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
