package templates

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/secretfs/secretfs/resolver"
)

// No template takes the process's memory or CPU: one template for each
// bound ends in its worker with ErrLimit, and the daemon's side allocates
// little whatever the worker does. Integration's
// TestTemplateBombsLeaveTheDaemonAlone runs every bomb of bombs.List
// through a mount, times them and measures the daemon.
func TestRenderLimits(t *testing.T) {
	get := func(context.Context, resolver.Reference) ([]byte, error) { return []byte("abc"), nil }
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	bounds := []struct{ name, text string }{
		{"output", `{{ range 100000 }}{{ repeat 1000 "x" }}{{ end }}`},
		{"steps", `{{ range 1000000000 }}{{ end }}`},
		{"memory", `{{ until 1000000000 }}`},
		{"memory held", `{{ $l := list }}{{ range 600 }}{{ $l = append $l (repeat 1000000 "x") }}{{ end }}`},
		{"CPU", `{{ regexFindAll "a*b|a" (repeat 30000 "a") -1 }}`},
		{"a value that holds itself", `{{ $d := dict }}{{ $_ := set $d "a" $d }}{{ $d }}`},
		{"shared structure", `{{ $d := dict "s" (repeat 3000000 "x") }}{{ $l := list }}{{ range 1000 }}{{ $l = append $l $d }}{{ end }}{{ $l }}`},
	}
	t.Run("bounds", func(t *testing.T) {
		for _, tt := range bounds {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				tmpl, err := Parse("t", "", tt.text)
				if err != nil {
					t.Fatal(err)
				}
				if out, _, err := tmpl.Render(context.Background(), get); !errors.Is(err, ErrLimit) {
					t.Errorf("%s: %d bytes, err = %.200v; want ErrLimit", tt.text, len(out), err)
				}
			})
		}
	})
	runtime.ReadMemStats(&after)
	if got, want := after.TotalAlloc-before.TotalAlloc, uint64(len(bounds))*(maxAnswer+1<<20); got > want {
		t.Errorf("the daemon's side allocated %d MiB, want at most %d MiB", got>>20, want>>20)
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
		if err != nil && strings.Contains(err.Error(), "31415926") {
			t.Errorf("printf of a secret format: %v, want an error that quotes nothing", err)
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
	// A template that calls itself ends: at text/template's depth, or at
	// the worker's bounds.
	for _, text := range []string{`{{ define "a" }}{{ template "a" }}{{ end }}{{ template "a" }}`,
		`{{ define "a" }}{{ template "b" }}{{ end }}{{ define "b" }}{{ if true }}{{ template "a" }}{{ template "a" }}{{ end }}{{ end }}{{ template "b" }}`} {
		tmpl, err := Parse("t", "", text)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := tmpl.Render(context.Background(), get); !errors.Is(err, ErrRender) && !errors.Is(err, ErrLimit) {
			t.Errorf("a recursive template: %v, want a failed render", err)
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
