// Package bombs lists templates that try to take a renderer's memory or
// CPU: every one must fail fast with templates.ErrLimit, in the templates
// package's tests and through a real mount (integration).
package bombs

import "strings"

// List holds the bombs, each found by a review or a probe.
var List = []string{
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
	// A list of 100 references to one dict holding a 3 MB string,
	// printed: 1.2 GB in 10 s in the daemon, before render workers.
	`{{ $d := dict "s" (repeat 3000000 "x") }}{{ $l := list }}{{ range 100 }}{{ $l = append $l $d }}{{ end }}{{ $l }}`,
	`{{ $d := dict "s" (repeat 3000000 "x") }}{{ $l := list }}{{ range 1000 }}{{ $l = append $l $d }}{{ end }}{{ $l }}`,
}
