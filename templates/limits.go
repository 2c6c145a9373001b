package templates

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"text/template"
	"text/template/parse"
)

// Limits of one render. A template may come from someone the process does
// not trust (a SecretProviderClass's author on Kubernetes), so that no
// template can take the memory or the CPU of the process:
//
//   - MaxSize bounds the output, and every string a function returns;
//     functions whose result size is known before they run (repeat,
//     indent, printf widths, replace...) check it first, so no single
//     call allocates much more.
//   - MaxItems bounds every list or map a function returns (until, seq,
//     splitList...).
//   - MaxSteps bounds the iterations of every range and the calls of every
//     defined template, whatever they range over (an integer, a variable),
//     and the render ends when its context does.
const (
	MaxSize  = 4 << 20
	MaxItems = 100_000
	MaxSteps = 200_000
)

// ErrLimit is a render that went past a limit.
var ErrLimit = errors.New("template limit")

// removed are sprig functions a template does not get: random or
// time-dependent output (a file would change at every render) and costly
// key generation.
var removed = []string{"shuffle", "randInt", "bcrypt", "htpasswd", "genPrivateKey", "derivePassword",
	"genCA", "genCAWithKey", "genSelfSignedCert", "genSelfSignedCertWithKey", "genSignedCert",
	"genSignedCertWithKey", "encryptAES"}

// tickName is the function put at the start of every range body and
// defined template, which counts steps. Not a name a template can write.
const tickName = "secretfs_step__"

// bigWidth matches a printf verb with a width or precision from an
// argument (*) or of 7 digits or more.
var bigWidth = regexp.MustCompile(`%[-+# 0]*(\*|[0-9]{7,}|[0-9]*\.(\*|[0-9]{7,}))`)

func limitErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrLimit}, args...)...)
}

// guarded returns f with the functions that could allocate much checked
// first, and every function's result checked after.
func guarded(f template.FuncMap) template.FuncMap {
	for _, name := range removed {
		delete(f, name)
	}
	pre := map[string]any{
		"repeat": func(count int, s string) (string, error) {
			if count < 0 || (len(s) > 0 && count > MaxSize/len(s)) {
				return "", limitErr("repeat: more than %d bytes", MaxSize)
			}
			return strings.Repeat(s, count), nil
		},
		"until": func(n int) ([]int, error) { return intRange(0, n, 1) },
		"untilStep": func(start, stop, step int) ([]int, error) {
			return intRange(start, stop, step)
		},
		// text/template's own, checked after like the rest.
		"print":    fmt.Sprint,
		"println":  fmt.Sprintln,
		"html":     template.HTMLEscaper,
		"js":       template.JSEscaper,
		"urlquery": template.URLQueryEscaper,
		"printf": func(format string, args ...any) (string, error) {
			if bigWidth.MatchString(format) {
				return "", limitErr("printf: widths from arguments or above 6 digits")
			}
			return fmt.Sprintf(format, args...), nil
		},
	}
	for name, fn := range map[string]string{"indent": "indent", "nindent": "nindent"} {
		orig := f[fn].(func(int, string) string)
		pre[name] = func(n int, s string) (string, error) {
			if n < 0 || n > MaxSize || int64(n)*int64(strings.Count(s, "\n")+1)+int64(len(s)) > MaxSize {
				return "", limitErr("%s: more than %d bytes", name, MaxSize)
			}
			return orig(n, s), nil
		}
	}
	replace := f["replace"].(func(string, string, string) string)
	pre["replace"] = func(old, new, src string) (string, error) {
		if growth(len(src), len(old), len(new)) > MaxSize {
			return "", limitErr("replace: more than %d bytes", MaxSize)
		}
		return replace(old, new, src), nil
	}
	wrapWith := f["wrapWith"].(func(int, string, string) string)
	pre["wrapWith"] = func(l int, sep, s string) (string, error) {
		if int64(len(sep))*int64(len(s)/max(l, 1)+1)+int64(len(s)) > MaxSize {
			return "", limitErr("wrapWith: more than %d bytes", MaxSize)
		}
		return wrapWith(l, sep, s), nil
	}
	for _, name := range []string{"regexReplaceAll", "regexReplaceAllLiteral"} {
		orig := f[name].(func(string, string, string) string)
		pre[name] = func(re, s, repl string) (string, error) {
			if growth(len(s), 0, len(repl)) > MaxSize {
				return "", limitErr("%s: more than %d bytes", name, MaxSize)
			}
			return orig(re, s, repl), nil
		}
	}
	delete(f, "seq") // its arguments are strings of a shell's seq; until and untilStep do the same
	for name, fn := range pre {
		f[name] = fn
	}
	out := make(template.FuncMap, len(f))
	for name, fn := range f {
		out[name] = checked(name, fn)
	}
	return out
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
	n := (int64(stop) - int64(start)) / int64(step)
	if n > MaxItems {
		return nil, limitErr("a list of more than %d items", MaxItems)
	}
	var out []int
	for i := start; (step > 0 && i < stop) || (step < 0 && i > stop); i += step {
		out = append(out, i)
	}
	return out, nil
}

// checked wraps fn so that a string above MaxSize or a list or map above
// MaxItems is an error instead of a result.
func checked(name string, fn any) any {
	v := reflect.ValueOf(fn)
	t := v.Type()
	if t.Kind() != reflect.Func {
		return fn
	}
	return reflect.MakeFunc(t, func(args []reflect.Value) []reflect.Value {
		var res []reflect.Value
		if t.IsVariadic() {
			res = v.CallSlice(args)
		} else {
			res = v.Call(args)
		}
		if len(res) == 0 || !tooBig(res[0]) {
			return res
		}
		if t.NumOut() == 2 && t.Out(1) == reflect.TypeFor[error]() {
			return []reflect.Value{reflect.Zero(t.Out(0)), reflect.ValueOf(limitErr("%s: a result above the limits", name))}
		}
		panic(limitErr("%s: a result above the limits", name)) // text/template turns it into an error
	}).Interface()
}

func tooBig(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		return v.Len() > MaxSize
	case reflect.Slice, reflect.Map, reflect.Array:
		return v.Len() > MaxItems
	case reflect.Interface:
		return !v.IsNil() && tooBig(v.Elem())
	}
	return false
}

// instrument puts a step at the start of every range body and defined
// template of tmpl's trees. A template that calls itself, directly or not,
// is refused: text/template unwinds deep recursion in quadratic time.
func instrument(tmpl *template.Template) error {
	calls := make(map[string][]string)
	for _, t := range tmpl.Templates() {
		if t.Tree == nil || t.Tree.Root == nil {
			continue
		}
		if t.Name() != tmpl.Name() {
			prependTick(t.Tree.Root)
		}
		walk(t.Tree.Root, func(name string) { calls[t.Name()] = append(calls[t.Name()], name) })
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
			return err
		}
	}
	return nil
}

// walk instruments the ranges below n and tells call of every template
// invoked.
func walk(n parse.Node, call func(string)) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			walk(c, call)
		}
	case *parse.RangeNode:
		prependTick(n.List)
		walk(n.List, call)
		walk(n.ElseList, call)
	case *parse.IfNode:
		walk(n.List, call)
		walk(n.ElseList, call)
	case *parse.WithNode:
		walk(n.List, call)
		walk(n.ElseList, call)
	case *parse.TemplateNode:
		call(n.Name)
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

// stepper counts the steps of one render.
func stepper(ctx context.Context) func() (string, error) {
	steps := 0
	return func() (string, error) {
		steps++
		if steps > MaxSteps {
			return "", limitErr("more than %d loop iterations or template calls", MaxSteps)
		}
		if steps%1024 == 0 && ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", nil
	}
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
