package templates

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/secretfs/secretfs/internal/bombs"
	"github.com/secretfs/secretfs/resolver"
)

// No template takes the process's memory or CPU: each of these ends fast
// with ErrLimit, allocating a bounded amount.
func TestRenderLimits(t *testing.T) {
	get := func(context.Context, resolver.Reference) ([]byte, error) { return []byte("abc"), nil }
	for _, text := range bombs.List {
		t.Run(text, func(t *testing.T) {
			tmpl, err := Parse("t", "", text)
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, _, err = tmpl.Render(context.Background(), get)
			el := time.Since(start)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrLimit) {
				t.Errorf("err = %.200v, want ErrLimit", err)
			}
			if el > 5*time.Second {
				t.Errorf("took %v", el)
			}
			t.Logf("%d MiB, %v", (after.TotalAlloc-before.TotalAlloc)>>20, el)
			if got := after.TotalAlloc - before.TotalAlloc; got > 256<<20 {
				t.Errorf("allocated %d MiB", got>>20)
			}
		})
	}
}

func TestRenderStopsWithItsContext(t *testing.T) {
	tmpl, err := Parse("t", "", `{{ range 900000 }}{{ end }}`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := tmpl.Render(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("a render under a canceled context: %v, want canceled", err)
	}
}

// A function's own message may quote a value; a render error leaves it out
// but says where, and errors of the engine keep their kind.
func TestRenderErrorsHoldNoValue(t *testing.T) {
	get := func(_ context.Context, ref resolver.Reference) ([]byte, error) {
		if ref.Key == "missing" {
			return nil, resolver.ErrNotFound
		}
		return []byte("TOPSECRETVALUE"), nil
	}
	// A limit's message quotes no argument.
	if tmpl, err := Parse("t", "", `{{ printf (secret "env:x") 1 }}`); err == nil {
		_, _, err := tmpl.Render(context.Background(), func(context.Context, resolver.Reference) ([]byte, error) {
			return []byte("%31415926535897932384626TOPSECRETd"), nil
		})
		if err == nil || strings.Contains(err.Error(), "31415926") {
			t.Errorf("printf of a secret format: %v, want a limit that quotes nothing", err)
		}
	}
	for _, text := range []string{`{{ fail (secret "env:x") }}`, `{{ mustFromJson (secret "env:x") }}`, `{{ mustRegexMatch (print "(" (secret "env:x")) "a" }}`,
		`{{ range $k, $v := (secret "env:x") }}{{ end }}`, `{{ index (secret "env:x") 99 }}`, `{{ (secret "env:x").Field }}`} {
		tmpl, err := Parse("t", "", text)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = tmpl.Render(context.Background(), get)
		if !errors.Is(err, ErrRender) || strings.Contains(err.Error(), "TOPSECRET") || strings.Contains(err.Error(), "'T'") {
			t.Errorf("%s: %v, want ErrRender without the value", text, err)
		}
	}
	tmpl, _ := Parse("t", "", `{{ secret "env:missing" }}`)
	if _, _, err := tmpl.Render(context.Background(), get); !errors.Is(err, resolver.ErrNotFound) || !strings.Contains(err.Error(), "env:missing") {
		t.Errorf("a missing secret: %v, want not found naming env:missing", err)
	}
	// A reference is a literal of the template: no value can become one.
	for _, text := range []string{`{{ secret (print "env:" (secret "env:x")) }}`, `{{ secret (secret "env:x") }}`, `{{ "env:x" | secret }}`,
		`{{ (secret (secret "env:x")).x }}`, `{{ (secret (printf "env:%s" (secret "env:x"))).x }}`, `{{ (secret).x }}`,
		`{{ $r := "env:x" }}{{ secret $r }}`, `{{ secret "nocolon" }}`, `{{ print secret }}`} {
		if _, err := Parse("t", "", text); err == nil {
			t.Errorf("%s: parsed, want refused", text)
		}
	}
	if tmpl, err := Parse("t", "", `{{ secret "env:a" }}{{ if true }}{{ secret "aws:b#c" }}{{ end }}{{ secret "env:a" }}`); err != nil {
		t.Error(err)
	} else if got := fmt.Sprint(tmpl.Refs()); got != "[env:a aws:b#c]" {
		t.Errorf("Refs = %s, want [env:a aws:b#c]", got)
	}
	for _, text := range []string{`{{ define "a" }}{{ template "a" }}{{ end }}`, `{{ define "a" }}{{ template "b" }}{{ end }}{{ define "b" }}{{ if true }}{{ template "a" }}{{ end }}{{ end }}`} {
		if _, err := Parse("t", "", text); err == nil || !strings.Contains(err.Error(), "calls itself") {
			t.Errorf("a recursive template: %v, want refused", err)
		}
	}
	for _, name := range []string{"genPrivateKey", "randInt", "shuffle", "bcrypt"} {
		if _, err := Parse("t", "", "{{ "+name+" }}"); err == nil {
			t.Errorf("%s is offered", name)
		}
	}
}

// A template from someone not trusted gets a short list of functions; an
// ordinary one renders.
func TestUntrustedTemplates(t *testing.T) {
	big := `{"a":"y"}`
	get := func(_ context.Context, ref resolver.Reference) ([]byte, error) {
		switch ref.Key {
		case "cfg":
			var b strings.Builder
			b.WriteString("{")
			for i := range 500 {
				fmt.Fprintf(&b, `"k%03d":"value %d",`, i, i)
			}
			b.WriteString(`"END":"x"}`)
			return []byte(b.String()), nil
		case "pem":
			return []byte("-----BEGIN CERTIFICATE-----\n" + strings.Repeat("QUJD\n", 200000) + "-----END CERTIFICATE-----\n"), nil
		}
		return []byte(big), nil
	}
	for _, text := range []string{
		`{{ $m := fromJson (secret "aws:cfg") }}{{ range $k := keys $m | sortAlpha }}{{ $k }}={{ get $m $k | quote }}{{ if hasKey $m "END" }}.{{ end }}` + "\n" + `{{ end }}`,
		`{{ $p := secret "aws:pem" }}{{ $p | b64enc | len }} {{ nindent 2 $p | len }} {{ quote $p | len }} {{ dict "pem" $p | toJSON | len }}`,
		`A={{ secret "env:A" | quote }}{{ printf "%s" (secret "env:A") }}{{ toJSON (dict "a" (secret "env:A")) }}`,
	} {
		tmpl, err := ParseUntrusted("t", "", text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if _, _, err := tmpl.Render(context.Background(), get); err != nil {
			t.Errorf("%.60s...: %v, want rendered", text, err)
		}
	}
	for _, fn := range []string{"regexMatch \"a\" \"a\"", "uniq (list 1)", "set (dict) \"a\" 1", "toDate \"2006\" \"2020\"", "deepCopy (dict)", "merge (dict) (dict)", "semver \"1.0.0\""} {
		if _, err := ParseUntrusted("t", "", "{{ "+fn+" }}"); err == nil {
			t.Errorf("%s is offered to an untrusted template", fn)
		}
	}
}

// text/template's builtins, replaced by checked ones, mean what they meant.
func TestBuiltinsKeepTheirMeaning(t *testing.T) {
	for text, want := range map[string]string{`{{ lt 1 2 }}`: "true", `{{ gt "b" "a" }}`: "true", `{{ le 2 2 }}`: "true", `{{ ge 1.5 2 }}`: "false", `{{ if and 1 0 }}y{{ else }}n{{ end }}`: "n", `{{ or 0 "x" }}`: "x", `{{ not 0 }}`: "true", `{{ eq 1 2 1 }}`: "true", `{{ eq (len "ab") 2.0 }}`: "true", `{{ ne "a" "a" }}`: "false", `{{ len "abc" }}`: "3"} {
		tm, err := ParseUntrusted("t", "", text)
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := tm.Render(context.Background(), nil)
		if err != nil || string(out) != want {
			t.Errorf("%s = %q, %v; want %q", text, out, err, want)
		}
	}
}
