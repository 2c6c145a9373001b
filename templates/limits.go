package templates

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"regexp/syntax"
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
//     strings) and its result. Every value a template holds comes from a
//     function, so none is larger.
//   - MaxWork bounds the bytes passed to and returned by all the function
//     calls of a render, and so the memory it keeps and the work it does.
//   - MaxItems bounds every list or map a function returns; functions whose
//     result size is known before they run (repeat, indent, printf widths,
//     replace, split, regular expressions...) check it first, so no single
//     call allocates much more than the limits.
//   - MaxSteps bounds the iterations of every range and the calls of every
//     defined template, whatever they range over; the render ends when its
//     context does, checked at every step and call.
//   - MaxRenders renders run at once in the process; others wait.
//
// A template that calls itself is refused at parse time, as is a secret
// call whose argument is not a string literal: what a template reads is
// known before it runs, and no value can become a reference (and so a log
// line or an error).
const (
	MaxSize    = 4 << 20
	MaxWork    = 32 << 20
	MaxItems   = 100_000
	MaxSteps   = 200_000
	MaxRenders = 4
	// maxRegexWork bounds the size of a compiled regular expression times
	// the length of its input.
	maxRegexWork = 50_000_000
	// expansion bounds how much larger than its arguments a function's
	// result can be (quoting, JSON escapes, hex).
	expansion = 6
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
// defined template, which counts steps. Not a name a template can write.
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
}

func (b *budget) step() (string, error) {
	b.steps++
	if b.steps > MaxSteps {
		return "", limitErr("more than %d loop iterations or template calls", MaxSteps)
	}
	return "", b.ctx.Err()
}

func (b *budget) spend(n int64) error {
	if b == nil {
		return nil
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	b.work += n
	if b.work > MaxWork {
		return limitErr("more than %d bytes through functions", MaxWork)
	}
	return nil
}

// funcs is the template's function map, every function checked against b.
func funcs(base template.FuncMap, b *budget) template.FuncMap {
	f := make(template.FuncMap, len(base)+16)
	for name, fn := range base {
		f[name] = fn
	}
	for _, name := range removed {
		delete(f, name)
	}
	// text/template's own, checked like the rest.
	f["print"], f["println"] = fmt.Sprint, fmt.Sprintln
	f["html"], f["js"], f["urlquery"] = template.HTMLEscaper, template.JSEscaper, template.URLQueryEscaper
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
		out[tickName] = b.step
	} else {
		out[tickName] = func() (string, error) { return "", nil }
	}
	return out
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
		return fmt.Sprintf(format, args...), nil
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
				return limitErr("printf: a width of %s", n)
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
		if len(args) == 3 && args[2].Kind() == reflect.Int && (args[2].Int() < 0 || args[2].Int() > MaxItems) {
			args[2] = reflect.ValueOf(MaxItems + 1) // at most MaxItems+1 matches; more is refused after
		}
		return v.Call(args)
	}).Interface()
}

func checkRegex(re string, input int) error {
	if len(re) > 4096 {
		return limitErr("a regular expression longer than 4096 bytes")
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
	if n := (int64(stop) - int64(start)) / int64(step); n > MaxItems {
		return nil, limitErr("a list of more than %d items", MaxItems)
	}
	var out []int
	for i := start; (step > 0 && i < stop) || (step < 0 && i > stop); i += step {
		out = append(out, i)
	}
	return out, nil
}

// checked wraps fn: its arguments together are at most MaxSize bytes,
// spent from b with its result, and its result is no larger than MaxSize
// bytes or MaxItems items.
func checked(name string, fn any, b *budget) any {
	v := reflect.ValueOf(fn)
	t := v.Type()
	if t.Kind() != reflect.Func {
		return fn
	}
	return reflect.MakeFunc(t, func(args []reflect.Value) []reflect.Value {
		var in int64
		for _, a := range args {
			in += deepSize(a, MaxSize+1, 0)
		}
		if in > MaxSize {
			return failWith(t, limitErr("%s: arguments of more than %d bytes", name, MaxSize))
		}
		if err := b.spend(in * expansion); err != nil {
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
		if tooBig(res[0]) {
			return failWith(t, limitErr("%s: a result above the limits", name))
		}
		if err := b.spend(deepSize(res[0], MaxSize+1, 0)); err != nil {
			return failWith(t, fmt.Errorf("%s: %w", name, err))
		}
		return res
	}).Interface()
}

// deepSize is the bytes of strings and the items of lists and maps below
// v, counted up to limit.
func deepSize(v reflect.Value, limit int64, depth int) int64 {
	if depth > 16 || !v.IsValid() {
		return 0
	}
	switch v.Kind() {
	case reflect.String:
		return int64(v.Len())
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return int64(v.Len())
		}
		n := int64(v.Len())
		for i := 0; i < v.Len() && n <= limit; i++ {
			n += deepSize(v.Index(i), limit-n, depth+1)
		}
		return n
	case reflect.Map:
		n := int64(v.Len())
		for it := v.MapRange(); it.Next() && n <= limit; {
			n += deepSize(it.Key(), limit-n, depth+1) + deepSize(it.Value(), limit-n, depth+1)
		}
		return n
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return 0
		}
		return deepSize(v.Elem(), limit, depth+1)
	case reflect.Struct:
		var n int64
		for i := 0; i < v.NumField() && n <= limit; i++ {
			n += deepSize(v.Field(i), limit-n, depth+1)
		}
		return n
	}
	return 8
}

func tooBig(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		return v.Len() > MaxSize
	case reflect.Slice, reflect.Map, reflect.Array:
		return v.Len() > MaxItems || deepSize(v, MaxSize+1, 0) > MaxSize
	case reflect.Interface:
		return !v.IsNil() && tooBig(v.Elem())
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

// limitedBuffer is the output of a render, refusing to grow past MaxSize.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if len(l.b)+len(p) > MaxSize {
		return 0, limitErr("an output of more than %d bytes", MaxSize)
	}
	l.b = append(l.b, p...)
	return len(p), nil
}
