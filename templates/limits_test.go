package templates

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// No template takes the process's memory or CPU: each of these ends fast
// with ErrLimit, allocating a bounded amount.
func TestRenderLimits(t *testing.T) {
	get := func(context.Context, resolver.Reference) ([]byte, error) { return []byte("abc"), nil }
	for _, text := range []string{
		`{{ repeat 300000000 "x" }}`,
		`{{ until 1000000000 }}`,
		`{{ untilStep 0 1000000000 1 }}`,
		`{{ indent 100000000 "x" }}`,
		`{{ nindent 5000 (repeat 1000 "a\n") }}`,
		`{{ printf "%*d" 1000000000 1 }}`,
		`{{ printf "%1000000000d" 1 }}`,
		`{{ printf "%.1000000000f" 1.0 }}`,
		`{{ replace "" (repeat 4000 "y") (repeat 4000 "x") }}`,
		`{{ regexReplaceAll "" (repeat 4000 "x") (repeat 4000 "y") }}`,
		`{{ wrapWith 1 (repeat 4000 "s") (repeat 4000 "x") }}`,
		`{{ range 1000000000 }}{{ end }}`,
		`{{ $l := until 1000 }}{{ range $l }}{{ range $l }}{{ range $l }}{{ end }}{{ end }}{{ end }}`,
		`{{ define "a" }}{{ range 100 }}{{ "x" }}{{ end }}{{ end }}{{ define "b" }}{{ range 100 }}{{ template "a" }}{{ end }}{{ end }}{{ range 100 }}{{ template "b" }}{{ end }}`,
		`{{ range 100000 }}{{ repeat 1000 "x" }}{{ end }}`,
		`{{ $s := repeat 1000000 "x" }}{{ range 10 }}{{ $s = print $s $s }}{{ end }}{{ len $s }}`,
		`{{ $s := repeat 1000000 "x" }}{{ range 10 }}{{ $s = html $s $s }}{{ end }}{{ len $s }}`,
		`{{ splitList "" (repeat 200000 "x") }}`,
		// Bypasses a review found: functions that combine their arguments.
		`{{ $s := repeat 4000000 "x" }}{{ $l := list $s $s $s $s $s $s $s $s $s $s }}{{ $c := concat $l $l $l $l $l $l $l $l $l $l }}{{ join "," $c }}`,
		`{{ printf (repeat 1000 "%999999[1]d") 1 }}`,
		`{{ $s := repeat 1000000 "x" }}{{ $l := list $s $s $s }}{{ $m := list $l $l $l }}{{ toJson $m }}`,
		`{{ $s := repeat 1000000 "x" }}{{ cat $s $s $s $s $s $s $s $s $s $s }}`,
		`{{ split "" (repeat 4000000 "x") }}`,
		`{{ regexSplit "" (repeat 4000000 "x") -1 }}`,
		`{{ regexFindAll "." (repeat 4000000 "x") -1 }}`,
		`{{ $d := dict }}{{ range $i := until 1000 }}{{ $_ := set $d (printf "%04d" $i) (repeat 1000000 "x") }}{{ end }}`,
		`{{ $l := list }}{{ range 300 }}{{ $l = append $l (repeat 1000000 "x") }}{{ end }}`,
		`{{ regexMatch "x{1000}y" (repeat 4000000 "x") }}`,
		`{{ $s := repeat 4000000 "x" }}{{ range 100000 }}{{ sha256sum $s }}{{ end }}`,
		// Bypasses a second review found.
		`{{ $d := dict }}{{ $_ := set $d "a" $d }}{{ $d }}`,
		`{{ $d := dict }}{{ $_ := set $d "a" $d }}{{ toYAML $d }}`,
		`{{ join (repeat 3000000 "a") (until 100000) }}`,
		`{{ $x := list 1 }}{{ range 40 }}{{ $x = list $x $x }}{{ end }}{{ $x }}`,
		`{{ regexReplaceAll "" (repeat 1000 "a") (repeat 1000000 "b") }}`,
		`{{ regexReplaceAll "a" (repeat 10000 "a") (repeat 1000 "$0") }}`,
		`{{ splitn "" 100000000 (repeat 4000000 "a") }}`,
		`{{ untilStep -9223372036854775808 9223372036854775807 1 }}`,
		`{{ printf "%999999d" (until 1000) }}`,
		`{{ toPrettyJson (fromJson (printf "%s1%s" (repeat 9999 "[") (repeat 9999 "]"))) }}`,
		`{{ fromJson (printf "[%s0]" (repeat 1000000 "0,")) }}`,
		`{{ uniq (until 100000) }}`,
		`{{ regexFindAll "a*b|a" (repeat 30000 "a") -1 }}`,
		`{{ $a := repeat 2000000 "x" }}{{ $b := print (repeat 1999999 "x") "y" }}{{ range 2000 }}{{ if eq $a $b $b $b $b $b $b $b $b $b }}{{ end }}{{ end }}`,
		`{{ $a := repeat 4000000 "x" }}{{ $b := print (repeat 3999999 "x") "y" }}{{ range 200000 }}{{ if lt $a $b }}{{ end }}{{ end }}`,
		// A fourth review's.
		`{{ $s := repeat 99999 "a," }}` + strings.Repeat(`{{ $m := split "," $s }}`, 400),
		`{{ $s := repeat 99999 "," }}` + strings.Repeat(`{{ $m := splitList "," $s }}`, 400),
		strings.Repeat(`{{ $m := until 99999 }}`, 800),
		`{{ $m := dict }}{{ range $i := until 20000 }}{{ $m = merge $m (dict (toString $i) 1) }}{{ end }}` + strings.Repeat(`{{ range $m }}{{ break }}{{ end }}`, 300),
		`{{ toJSON (repeat 4000000 "<") }}`,
		`{{ toYAML (repeat 4000000 "\x01") }}`,
	} {
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
