package templates

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// Limits of one render. A template may come from someone the process does
// not trust (a SecretProviderClass's author on Kubernetes), so no template
// can take the memory or the CPU of the process:
//
//   - MaxSize bounds the output, the arguments of any function call (all of
//     them together, counted deep: a list of strings is the sum of the
//     strings, a value that contains itself or nests deeper than MaxDepth
//     is too large) and its result. Every value a template holds comes
//     from a function, so none is larger.
//   - MaxWork bounds the strings and items passed to and returned by all
//     the function calls of a render (a list counts its items, not what is
//     below them, so a loop over a map does not pay for the map at every
//     turn), and MaxScan the values walked to measure them: together, the
//     memory a render keeps and the work it does.
//   - MaxItems bounds every list or map a function returns; functions whose
//     result size is known before they run (repeat, indent, printf widths,
//     replace, split, regular expressions...) check it first, so no single
//     call allocates much more than the limits.
//   - MaxSteps bounds the iterations of every range and the calls of every
//     defined template, whatever they range over; the render ends when its
//     context does, checked at every step and call.
//   - MaxRenders renders run at once in the process; others wait.
//
// A template that comes from someone not trusted (ParseUntrusted) gets a
// short list of functions, each linear in its arguments and returning
// plain strings, lists and maps (untrustedFuncs), instead of all of
// sprig's: sprig has functions quadratic in their input (uniq, regular
// expressions), functions that change values in place (set, merge), and
// functions that return values with methods (toDate, semver).
//
// A template that calls itself is refused at parse time, as is a secret
// call whose argument is not a string literal: what a template reads is
// known before it runs, and no value can become a reference (and so a log
// line or an error).
const (
	MaxSize    = 4 << 20
	MaxWork    = 64 << 20
	MaxScan    = 256 << 20
	MaxDepth   = 32
	MaxItems   = 100_000
	MaxSteps   = 200_000
	MaxRenders = 4
	// maxRegexWork bounds the size of a compiled regular expression times
	// the length of its input.
	maxRegexWork = 50_000_000
)

// ErrLimit is a render that went past a limit.
var ErrLimit = errors.New("template limit")

// renders holds a slot per render under way.
var renders = make(chan struct{}, MaxRenders)

// removed are sprig functions a template does not get: random or
// time-dependent output (a file would change at every render) and costly
// key generation.
var removed = []string{"shuffle", "randInt", "bcrypt", "htpasswd", "genPrivateKey", "derivePassword",
	"genCA", "genCAWithKey", "genSelfSignedCert", "genSelfSignedCertWithKey", "genSignedCert",
	"genSignedCertWithKey", "encryptAES", "seq"}

// tickName is the function put at the start of every range body and
// defined template, which counts steps. A template that calls it itself
// only spends its own steps.
const tickName = "secretfs_step__"

func limitErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrLimit}, args...)...)
}

// budget is what one render may still spend. A nil budget (parse time)
// spends nothing.
type budget struct {
	ctx   context.Context
	steps int
	work  int64
	scan  int64
}

func (b *budget) step() (string, error) {
	b.steps++
	if b.steps > MaxSteps {
		return "", limitErr("more than %d loop iterations or template calls", MaxSteps)
	}
	return "", b.ctx.Err()
}

func (b *budget) spend(work, scan int64) error {
	if b == nil {
		return nil
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	b.work += work
	b.scan += scan
	switch {
	case b.work > MaxWork:
		return limitErr("more than %d bytes and items through functions", MaxWork)
	case b.scan > MaxScan:
		return limitErr("more than %d values walked to measure arguments", MaxScan)
	}
	return nil
}

// funcs is the template's function map, every function checked against b.
func funcs(base template.FuncMap, b *budget, untrusted bool) template.FuncMap {
	f := make(template.FuncMap, len(base)+32)
	for name, fn := range base {
		if !untrusted || untrustedFuncs[name] {
			f[name] = fn
		}
	}
	for _, name := range removed {
		delete(f, name)
	}
	// text/template's own, checked like the rest (and and or then lose
	// their short cut: both sides are evaluated).
	for name, fn := range builtins {
		f[name] = fn
	}
	if untrusted {
		f["call"] = func(any, ...any) (string, error) { return "", limitErr("call is not offered") }
	}
	for _, name := range []string{"fromJson", "mustFromJson"} {
		if _, ok := f[name]; ok {
			f[name] = fromJSONChecked
		}
	}
	for _, name := range []string{"toJSON", "toJson", "mustToJson", "toPrettyJson", "mustToPrettyJson", "toRawJson", "mustToRawJson", "toYAML", "toYaml"} {
		if fn, ok := f[name]; ok {
			f[name] = encoder(name, fn)
		}
	}
	for _, name := range []string{"uniq", "mustUniq", "without", "mustWithout"} {
		if fn, ok := f[name]; ok {
			f[name] = quadratic(name, fn)
		}
	}
	for name, pre := range preChecks {
		if _, ok := f[name]; ok || name == "printf" {
			f[name] = pre
		}
	}
	out := make(template.FuncMap, len(f))
	for name, fn := range f {
		out[name] = checked(name, fn, b)
	}
	if b != nil {
		out[tickName], out[rangeName] = b.step, b.ranged
	} else {
		out[tickName] = func() (string, error) { return "", nil }
		out[rangeName] = func(v any) (any, error) { return v, nil }
	}
	return out
}

// builtins are text/template's own functions, as functions that can be
// checked.
var builtins = map[string]any{
	"print": fmt.Sprint, "println": fmt.Sprintln,
	"html": template.HTMLEscaper, "js": template.JSEscaper, "urlquery": template.URLQueryEscaper,
	"eq": func(a any, bs ...any) bool {
		return slices.ContainsFunc(bs, func(b any) bool { return equal(a, b) })
	},
	"ne":  func(a, b any) bool { return !equal(a, b) },
	"not": func(a any) bool { return !truth(a) },
	"and": func(a any, bs ...any) any {
		for _, b := range append([]any{a}, bs...) {
			if !truth(b) {
				return b
			}
			a = b
		}
		return a
	},
	"or": func(a any, bs ...any) any {
		for _, b := range append([]any{a}, bs...) {
			if truth(b) {
				return b
			}
			a = b
		}
		return a
	},
	"lt": func(a, b any) (bool, error) { c, err := compare(a, b); return c < 0, err },
	"le": func(a, b any) (bool, error) { c, err := compare(a, b); return c <= 0, err },
	"gt": func(a, b any) (bool, error) { c, err := compare(a, b); return c > 0, err },
	"ge": func(a, b any) (bool, error) { c, err := compare(a, b); return c >= 0, err },
	"len": func(v any) (int, error) {
		r := reflect.ValueOf(v)
		switch r.Kind() {
		case reflect.String, reflect.Slice, reflect.Map, reflect.Array:
			return r.Len(), nil
		}
		return 0, fmt.Errorf("len of %s", r.Kind())
	},
}

// equal: two strings, or two numbers of any kind, that compare equal, or
// two values alike.
func equal(a, b any) bool {
	if c, err := compare(a, b); err == nil {
		return c == 0
	}
	return reflect.DeepEqual(a, b)
}

// compare orders two strings, or two numbers, as text/template's lt does.
func compare(a, b any) (int, error) {
	x, y := reflect.ValueOf(a), reflect.ValueOf(b)
	num := func(v reflect.Value) (float64, bool) {
		switch v.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			return float64(v.Int()), true
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			return float64(v.Uint()), true
		case reflect.Float32, reflect.Float64:
			return v.Float(), true
		}
		return 0, false
	}
	if x.Kind() == reflect.String && y.Kind() == reflect.String {
		return strings.Compare(x.String(), y.String()), nil
	}
	fx, ok1 := num(x)
	fy, ok2 := num(y)
	if !ok1 || !ok2 {
		return 0, errors.New("incompatible types for comparison")
	}
	switch {
	case fx < fy:
		return -1, nil
	case fx > fy:
		return 1, nil
	}
	return 0, nil
}

func truth(v any) bool {
	t, _ := template.IsTrue(v)
	return t
}

// untrustedFuncs are the functions of a template from someone not
// trusted, besides secret and text/template's own (checked as above).
var untrustedFuncs = map[string]bool{
	"quote": true, "squote": true, "toJSON": true, "toJson": true, "toYAML": true,
	"b64enc": true, "b64dec": true, "trim": true, "trimPrefix": true, "trimSuffix": true, "trimAll": true,
	"upper": true, "lower": true, "title": true, "default": true, "empty": true, "coalesce": true, "ternary": true,
	"indent": true, "nindent": true, "replace": true, "join": true, "split": true, "splitList": true,
	"dict": true, "list": true, "get": true, "hasKey": true, "keys": true, "sortAlpha": true,
	"fromJson": true, "first": true, "last": true, "contains": true, "hasPrefix": true, "hasSuffix": true,
	"trunc": true, "nospace": true, "cat": true, "toString": true, "atoi": true, "int": true,
	"sha256sum": true, "printf": true, "until": true, "add": true, "sub": true, "repeat": true,
}

// fromJSONChecked is sprig's fromJson that counts the values of its input
// before it decodes: a small document can decode into many values.
func fromJSONChecked(s string) (any, error) {
	if n := strings.Count(s, ",") + strings.Count(s, "[") + strings.Count(s, "{"); n > MaxItems {
		return nil, limitErr("fromJson: more than %d values", MaxItems)
	}
	if depth := max(strings.Count(s, "["), strings.Count(s, "{")); depth > MaxItems {
		return nil, limitErr("fromJson: too deep")
	}
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, errors.New("fromJson: not JSON") // json's message may quote the input
	}
	return v, nil
}

// preChecks replace functions whose result size (or cost) is known from
// their arguments: they refuse before they allocate.
var preChecks = map[string]any{
	"repeat": func(count int, s string) (string, error) {
		if count < 0 || int64(count)*int64(len(s)) > MaxSize {
			return "", limitErr("repeat: more than %d bytes", MaxSize)
		}
		return strings.Repeat(s, count), nil
	},
	"until":     func(n int) ([]int, error) { return intRange(0, n, 1) },
	"untilStep": func(start, stop, step int) ([]int, error) { return intRange(start, stop, step) },
	"printf": func(format string, args ...any) (string, error) {
		if err := checkFormat(format); err != nil {
			return "", err
		}
		for _, a := range args {
			if k := reflect.ValueOf(a).Kind(); k == reflect.Slice || k == reflect.Map || k == reflect.Array {
				if strings.ContainsAny(format, "123456789*") {
					return "", limitErr("printf: a width or precision with a list or map (applied to each item)")
				}
			}
		}
		return fmt.Sprintf(format, args...), nil
	},
	"join": func(sep string, v any) (string, error) {
		items := reflect.ValueOf(v)
		if k := items.Kind(); k == reflect.Slice || k == reflect.Array {
			if int64(len(sep))*int64(items.Len())+deepSize(items, MaxSize+1) > MaxSize {
				return "", limitErr("join: more than %d bytes", MaxSize)
			}
		}
		return sprigJoin(sep, v), nil
	},
	"splitn": func(sep string, n int, s string) (map[string]string, error) {
		if err := checkSplit(sep, s); err != nil && (n < 0 || n > MaxItems) {
			return nil, err
		}
		out := map[string]string{}
		for i, part := range strings.SplitN(s, sep, n) {
			out["_"+strconv.Itoa(i)] = part
		}
		return out, nil
	},
	"indent":  func(n int, s string) (string, error) { return indent(n, s, "") },
	"nindent": func(n int, s string) (string, error) { return indent(n, s, "\n") },
	"replace": func(old, new, src string) (string, error) {
		if growth(len(src), len(old), len(new)) > MaxSize {
			return "", limitErr("replace: more than %d bytes", MaxSize)
		}
		return strings.ReplaceAll(src, old, new), nil
	},
	"wrapWith": nil, // set in init: it needs sprig's
	"split": func(sep, s string) (map[string]string, error) {
		if err := checkSplit(sep, s); err != nil {
			return nil, err
		}
		out := map[string]string{}
		for i, part := range strings.Split(s, sep) {
			out["_"+strconv.Itoa(i)] = part
		}
		return out, nil
	},
	"splitList": func(sep, s string) ([]string, error) {
		if err := checkSplit(sep, s); err != nil {
			return nil, err
		}
		return strings.Split(s, sep), nil
	},
}

// sprigJoin is sprig's join.
var sprigJoin = baseFunctions()["join"].(func(string, any) string)

func init() {
	wrapWith := baseFunctions()["wrapWith"].(func(int, string, string) string)
	preChecks["wrapWith"] = func(l int, sep, s string) (string, error) {
		if int64(len(sep))*int64(len(s)/max(l, 1)+1)+int64(len(s)) > MaxSize {
			return "", limitErr("wrapWith: more than %d bytes", MaxSize)
		}
		return wrapWith(l, sep, s), nil
	}
	for _, name := range []string{"regexMatch", "mustRegexMatch", "regexFind", "mustRegexFind", "regexFindAll", "mustRegexFindAll",
		"regexReplaceAll", "mustRegexReplaceAll", "regexReplaceAllLiteral", "mustRegexReplaceAllLiteral", "regexSplit", "mustRegexSplit"} {
		fn := baseFunctions()[name]
		if fn == nil {
			continue
		}
		preChecks[name] = regexChecked(name, fn)
	}
}

// indent is sprig's indent and nindent, sized first.
func indent(n int, s, prefix string) (string, error) {
	lines := int64(strings.Count(s, "\n") + 1)
	if n < 0 || int64(n)*lines+int64(len(s)) > MaxSize {
		return "", limitErr("indent: more than %d bytes", MaxSize)
	}
	pad := strings.Repeat(" ", n)
	return prefix + pad + strings.ReplaceAll(s, "\n", "\n"+pad), nil
}

func checkSplit(sep, s string) error {
	parts := len(s) + 1
	if sep != "" {
		parts = strings.Count(s, sep) + 1
	}
	if parts > MaxItems {
		return limitErr("a split into more than %d parts", MaxItems)
	}
	return nil
}

// verb matches a printf verb, with its flags, argument indexes, width and
// precision.
var verb = regexp.MustCompile(`%[-+# 0]*(?:\[\d+\])?(\*|\d+)?(?:\.(?:\[\d+\])?(\*|\d+)?)?(?:\[\d+\])?[a-zA-Z%]`)

// checkFormat refuses a printf format whose widths and precisions add up
// past MaxSize, or come from arguments (*).
func checkFormat(format string) error {
	var total int64
	for _, m := range verb.FindAllStringSubmatch(format, -1) {
		for _, n := range m[1:] {
			if n == "*" {
				return limitErr("printf: a width or precision from an argument")
			}
			if v, err := strconv.ParseInt(n, 10, 64); err == nil {
				total += v
			} else if n != "" {
				return limitErr("printf: a width or precision too large") // n may come from a value
			}
		}
	}
	if total > MaxSize {
		return limitErr("printf: widths of more than %d bytes", MaxSize)
	}
	return nil
}

// regexChecked refuses a regular expression whose program times its input
// is too much work, or that is too long, before it runs; its first
// argument is the expression, its second the input.
func regexChecked(name string, fn any) any {
	v := reflect.ValueOf(fn)
	return reflect.MakeFunc(v.Type(), func(args []reflect.Value) []reflect.Value {
		re, input := args[0].String(), args[1].String()
		if err := checkRegex(re, len(input)); err != nil {
			return failWith(v.Type(), fmt.Errorf("%s: %w", name, err))
		}
		if strings.Contains(name, "egexReplace") { // regexReplaceAll…, mustRegexReplaceAll…
			// Each match (at most one a byte, and one more) becomes the
			// replacement, its $n expanded up to the whole input.
			repl := args[2].String()
			grow := int64(len(repl)) * int64(strings.Count(repl, "$")+1) * max(1, int64(len(input)*strings.Count(repl, "$")))
			if int64(len(input))+int64(len(input)+1)*min(grow, MaxSize+1) > MaxSize {
				return failWith(v.Type(), limitErr("%s: more than %d bytes", name, MaxSize))
			}
		}
		if len(args) == 3 && args[2].Kind() == reflect.Int && (args[2].Int() < 0 || args[2].Int() > MaxItems) {
			args[2] = reflect.ValueOf(MaxItems + 1) // at most MaxItems+1 matches; more is refused after
		}
		return v.Call(args)
	}).Interface()
}

// encoder wraps a JSON or YAML encoder: its output, escapes counted, must
// fit in MaxSize before it is built (an encoder builds it whole, in a
// buffer that doubles as it grows).
func encoder(name string, fn any) any {
	v := reflect.ValueOf(fn)
	return reflect.MakeFunc(v.Type(), func(args []reflect.Value) []reflect.Value {
		if len(args) > 0 && encodedSize(args[0], MaxSize+1) > MaxSize {
			return failWith(v.Type(), limitErr("%s: more than %d bytes", name, MaxSize))
		}
		return v.Call(args)
	}).Interface()
}

// rangeName is the function put at the end of every range's pipeline: it
// spends a step for every entry of a map ranged over (text/template sorts
// a map's keys before the first turn), and passes the value on.
const rangeName = "secretfs_range__"

func (b *budget) ranged(v any) (any, error) {
	if r := reflect.ValueOf(v); r.Kind() == reflect.Map {
		b.steps += r.Len()
		if b.steps > MaxSteps {
			return nil, limitErr("more than %d loop iterations or template calls", MaxSteps)
		}
	}
	return v, b.ctx.Err()
}

// quadratic wraps a function whose cost is the square of its list's
// length (sprig's uniq and without compare every item with every other).
func quadratic(name string, fn any) any {
	v := reflect.ValueOf(fn)
	return reflect.MakeFunc(v.Type(), func(args []reflect.Value) []reflect.Value {
		if l := reflect.Indirect(args[0]); l.IsValid() && l.Kind() == reflect.Interface && !l.IsNil() {
			args0 := l.Elem()
			if (args0.Kind() == reflect.Slice || args0.Kind() == reflect.Array) && args0.Len() > maxQuadratic {
				return failWith(v.Type(), limitErr("%s: a list of more than %d items", name, maxQuadratic))
			}
		} else if l.IsValid() && (l.Kind() == reflect.Slice || l.Kind() == reflect.Array) && l.Len() > maxQuadratic {
			return failWith(v.Type(), limitErr("%s: a list of more than %d items", name, maxQuadratic))
		}
		if v.Type().IsVariadic() {
			return v.CallSlice(args)
		}
		return v.Call(args)
	}).Interface()
}

// maxQuadratic bounds the lists of uniq and without; maxRegexInput the
// input of a regular expression (leftmost-first matching of every match
// can take the square of its length).
const (
	maxQuadratic  = 5000
	maxRegexInput = 16 << 10
)

func checkRegex(re string, input int) error {
	if len(re) > 4096 {
		return limitErr("a regular expression longer than 4096 bytes")
	}
	if input > maxRegexInput {
		return limitErr("a regular expression over more than %d bytes", maxRegexInput)
	}
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return nil // the function itself says so
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return nil
	}
	if int64(len(prog.Inst))*int64(input+1) > maxRegexWork {
		return limitErr("a regular expression too large for its input")
	}
	return nil
}

// failWith returns err as the results of a function of type t: as its
// error result, or as a panic, which text/template reports as the call's
// error.
func failWith(t reflect.Type, err error) []reflect.Value {
	if t.NumOut() == 2 && t.Out(1) == reflect.TypeFor[error]() {
		return []reflect.Value{reflect.Zero(t.Out(0)), reflect.ValueOf(&err).Elem()}
	}
	panic(err)
}

// growth bounds the size of replacing every match (at most one per byte,
// and one more, when old is empty) of a string of old bytes by new in n
// bytes.
func growth(n, old, new int) int64 {
	if new <= old {
		return int64(n)
	}
	return int64(n) + int64(n+1)*int64(new-old)
}

func intRange(start, stop, step int) ([]int, error) {
	if step == 0 {
		return nil, nil
	}
	var out []int
	for i := start; (step > 0 && i < stop) || (step < 0 && i > stop); {
		if len(out) == MaxItems {
			return nil, limitErr("a list of more than %d items", MaxItems)
		}
		out = append(out, i)
		next := i + step
		if (step > 0 && next < i) || (step < 0 && next > i) {
			break // it would wrap around
		}
		i = next
	}
	return out, nil
}

// checked wraps fn: its arguments together are at most MaxSize bytes
// deep, its result at most MaxSize bytes and MaxItems items, and both are
// spent from b (strings by their bytes, lists and maps by their items).
func checked(name string, fn any, b *budget) any {
	v := reflect.ValueOf(fn)
	t := v.Type()
	if t.Kind() != reflect.Func {
		return fn
	}
	return reflect.MakeFunc(t, func(args []reflect.Value) []reflect.Value {
		var deep, shallow int64
		for _, a := range args {
			deep += deepSize(a, MaxSize+1)
			shallow += shallowSize(a)
		}
		if deep > MaxSize {
			return failWith(t, limitErr("%s: arguments of more than %d bytes", name, MaxSize))
		}
		if err := b.spend(shallow, deep); err != nil {
			return failWith(t, fmt.Errorf("%s: %w", name, err))
		}
		var res []reflect.Value
		if t.IsVariadic() {
			res = v.CallSlice(args)
		} else {
			res = v.Call(args)
		}
		if len(res) == 0 {
			return res
		}
		size := deepSize(res[0], MaxSize+1)
		if size > MaxSize || tooMany(res[0]) {
			return failWith(t, limitErr("%s: a result above the limits", name))
		}
		if err := b.spend(shallowSize(res[0]), size); err != nil {
			return failWith(t, fmt.Errorf("%s: %w", name, err))
		}
		return res
	}).Interface()
}

// shallowSize is a string's bytes or a list's or map's items.
func shallowSize(v reflect.Value) int64 {
	for v.IsValid() && (v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer) && !v.IsNil() {
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.String:
		return int64(v.Len()) + 1
	case reflect.Slice, reflect.Array:
		return int64(v.Len())*itemBytes + 1
	case reflect.Map:
		return int64(v.Len())*entryBytes + 1
	}
	return 1
}

// What an item of a list and an entry of a map take in memory, about,
// besides the strings in them: lists and maps are counted by these, so
// that a budget in bytes bounds the memory a render holds.
const (
	itemBytes  = 16
	entryBytes = 64
)

// deepSize is the bytes of strings and of the items of lists and maps
// below v (itemBytes, entryBytes), counted up to limit; a value that
// contains itself, or nests deeper than MaxDepth, is over any limit.
func deepSize(v reflect.Value, limit int64) int64 {
	w := sizer{limit: limit, path: make(map[uintptr]bool)}
	return w.size(v, 0)
}

// encodedSize bounds the size of v encoded as JSON or YAML: a byte of a
// string that must be escaped takes up to six.
func encodedSize(v reflect.Value, limit int64) int64 {
	w := sizer{limit: limit, path: make(map[uintptr]bool), escapes: true}
	return w.size(v, 0)
}

type sizer struct {
	limit   int64
	n       int64
	path    map[uintptr]bool // containers being walked
	escapes bool             // count strings as escaped for JSON or YAML
}

func (w *sizer) size(v reflect.Value, depth int) int64 {
	if w.n > w.limit {
		return w.limit + 1
	}
	if depth > MaxDepth {
		w.n = w.limit + 1
		return w.n
	}
	if !v.IsValid() {
		return 0
	}
	switch v.Kind() {
	case reflect.String:
		w.n += int64(v.Len()) + 2
		if w.escapes {
			str := v.String()
			for i := 0; i < len(str) && w.n <= w.limit; i++ {
				if c := str[i]; c < 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '&' || c == '"' || c == '\\' {
					w.n += 5
				}
			}
		}
	case reflect.Slice, reflect.Map, reflect.Pointer:
		if v.IsNil() {
			return w.n
		}
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8 {
			w.n += int64(v.Len())
			return w.n
		}
		p := v.Pointer()
		if w.path[p] && (v.Kind() != reflect.Slice || v.Len() > 0) {
			w.n = w.limit + 1 // it contains itself
			return w.n
		}
		w.path[p] = true
		defer delete(w.path, p)
		switch v.Kind() {
		case reflect.Pointer:
			w.size(v.Elem(), depth+1)
		case reflect.Slice:
			w.items(v, depth)
		case reflect.Map:
			w.n += int64(v.Len()) * entryBytes
			for it := v.MapRange(); it.Next() && w.n <= w.limit; {
				w.size(it.Key(), depth+1)
				w.size(it.Value(), depth+1)
			}
		}
	case reflect.Array:
		w.items(v, depth)
	case reflect.Interface:
		if !v.IsNil() {
			w.size(v.Elem(), depth+1)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField() && w.n <= w.limit; i++ {
			w.size(v.Field(i), depth+1)
		}
	default:
		w.n += 8
	}
	return w.n
}

// items counts a list or array and what is in it.
func (w *sizer) items(v reflect.Value, depth int) {
	w.n += int64(v.Len()) * itemBytes
	for i := 0; i < v.Len() && w.n <= w.limit; i++ {
		w.size(v.Index(i), depth+1)
	}
}

// tooMany: a list or map of more than MaxItems items.
func tooMany(v reflect.Value) bool {
	for v.IsValid() && v.Kind() == reflect.Interface && !v.IsNil() {
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Slice, reflect.Map, reflect.Array:
		return v.Len() > MaxItems
	}
	return false
}

// check walks tmpl's trees once parsed: it puts a step at the start of
// every range body and defined template, refuses recursion, and refuses a
// secret call that is not `secret "LITERAL"` with a reference the grammar
// accepts. It returns the references the template reads.
func check(tmpl *template.Template, parseRef func(string) error) ([]string, error) {
	calls := make(map[string][]string)
	var refs []string
	var bad error
	for _, t := range tmpl.Templates() {
		if t.Tree == nil || t.Tree.Root == nil {
			continue
		}
		if t.Name() != tmpl.Name() {
			prependTick(t.Tree.Root)
		}
		w := walker{
			call: func(name string) { calls[t.Name()] = append(calls[t.Name()], name) },
			secret: func(cmd *parse.CommandNode, piped bool) {
				lit, ok := (*parse.StringNode)(nil), len(cmd.Args) == 2 && !piped
				if ok {
					lit, ok = cmd.Args[1].(*parse.StringNode)
				}
				if !ok && bad == nil {
					loc, _ := t.Tree.ErrorContext(cmd)
					bad = fmt.Errorf("%s: secret takes one quoted reference, such as secret \"aws:prod/db#password\"", loc)
					return
				}
				if ok {
					if err := parseRef(lit.Text); err != nil && bad == nil {
						loc, _ := t.Tree.ErrorContext(cmd)
						bad = fmt.Errorf("%s: %w", loc, err)
					}
					refs = append(refs, lit.Text)
				}
			},
		}
		w.walk(t.Tree.Root)
	}
	if bad != nil {
		return nil, bad
	}
	state := make(map[string]int) // 1: being visited, 2: done
	var visit func(name string) error
	visit = func(name string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("template %q calls itself: recursion is not allowed", name)
		case 2:
			return nil
		}
		state[name] = 1
		for _, c := range calls[name] {
			if err := visit(c); err != nil {
				return err
			}
		}
		state[name] = 2
		return nil
	}
	for name := range calls {
		if err := visit(name); err != nil {
			return nil, err
		}
	}
	return refs, nil
}

// walker visits a tree: call for every template invoked, secret for every
// command that names the secret function.
type walker struct {
	call   func(name string)
	secret func(cmd *parse.CommandNode, piped bool)
}

func (w walker) walk(n parse.Node) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			w.walk(c)
		}
	case *parse.ActionNode:
		w.pipe(n.Pipe)
	case *parse.RangeNode:
		w.pipe(n.Pipe)
		if n.Pipe != nil && len(n.Pipe.Cmds) > 0 {
			n.Pipe.Cmds = append(n.Pipe.Cmds, &parse.CommandNode{NodeType: parse.NodeCommand,
				Args: []parse.Node{&parse.IdentifierNode{NodeType: parse.NodeIdentifier, Ident: rangeName}}})
		}
		prependTick(n.List)
		w.walk(n.List)
		w.walk(n.ElseList)
	case *parse.IfNode:
		w.pipe(n.Pipe)
		w.walk(n.List)
		w.walk(n.ElseList)
	case *parse.WithNode:
		w.pipe(n.Pipe)
		w.walk(n.List)
		w.walk(n.ElseList)
	case *parse.TemplateNode:
		w.pipe(n.Pipe)
		w.call(n.Name)
	}
}

func (w walker) pipe(p *parse.PipeNode) {
	if p == nil {
		return
	}
	for i, cmd := range p.Cmds {
		for j, arg := range cmd.Args {
			switch a := arg.(type) {
			case *parse.IdentifierNode:
				if a.Ident == "secret" {
					if j == 0 {
						w.secret(cmd, i > 0)
					} else {
						w.secret(&parse.CommandNode{}, false) // secret as an argument: not a call
					}
				}
			case *parse.PipeNode:
				w.pipe(a)
			case *parse.ChainNode: // (PIPE).Field
				switch n := a.Node.(type) {
				case *parse.PipeNode:
					w.pipe(n)
				case *parse.IdentifierNode:
					if n.Ident == "secret" {
						w.secret(&parse.CommandNode{}, false)
					}
				}
			}
		}
	}
}

func prependTick(l *parse.ListNode) {
	if l == nil {
		return
	}
	tick := &parse.ActionNode{NodeType: parse.NodeAction, Pipe: &parse.PipeNode{NodeType: parse.NodePipe,
		Cmds: []*parse.CommandNode{{NodeType: parse.NodeCommand, Args: []parse.Node{&parse.IdentifierNode{NodeType: parse.NodeIdentifier, Ident: tickName}}}}}}
	l.Nodes = append([]parse.Node{tick}, l.Nodes...)
}

// limitedBuffer is output that refuses to grow past max bytes (a render's
// MaxSize, a worker's answer), and says whether more came.
type limitedBuffer struct {
	b    []byte
	max  int
	over bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if len(l.b)+len(p) > l.max {
		l.over = true
		return 0, limitErr("an output of more than %d bytes", l.max)
	}
	l.b = append(l.b, p...)
	return len(p), nil
}
