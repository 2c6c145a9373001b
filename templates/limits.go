package templates

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
)

// What a template may do. The bound that holds whatever a template's
// functions do is the render worker (worker.go): its own process, under
// rlimits and a deadline. What is left here is what the worker cannot
// give:
//
//   - a template reads only the secrets its text names: a secret call
//     whose argument is not one string literal is refused at parse time,
//     so what a template reads is known before it runs, and no value can
//     become a reference (and so a log line or an error);
//   - MaxRefs secrets at most, fetched by the daemon before the render;
//   - no function whose output changes from one render to the next
//     (random, time, key generation): a file would change at every read;
//   - MaxSize bounds the output and every value passed in (maxValues all
//     of them), and MaxSteps the iterations of every range and the runs
//     of every template (the root too: it may call itself): loops and
//     recursion are the usual ways to spend the worker's time, and these
//     end them in milliseconds with a clear message, not at the worker's
//     deadline;
//   - MaxRenders renders (and so workers) at once; others wait;
//   - a template from someone not trusted (ParseUntrusted) gets a short
//     list of functions (untrustedFuncs), a surface it needs for .env,
//     JSON, YAML and PEM files and nothing else.
const (
	MaxSize    = 4 << 20
	MaxSteps   = 200_000
	MaxRenders = 4
	// maxValues bounds the values of one render together: the daemon
	// sends them all to the worker.
	maxValues = 4 * MaxSize
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

// untrustedFuncs are the functions of a template from someone not
// trusted, besides secret and text/template's own.
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

// tickName is the function put at the start of every range body and
// defined template, which counts steps. A template that calls it itself
// only spends its own steps.
const tickName = "secretfs_step__"

func limitErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrLimit}, args...)...)
}

// funcs is a template's function map; steps counts its steps (nil at
// parse time).
func funcs(ctx context.Context, steps *int, untrusted bool) template.FuncMap {
	f := make(template.FuncMap, len(base)+2)
	for name, fn := range base {
		if !untrusted || untrustedFuncs[name] {
			f[name] = fn
		}
	}
	for _, name := range removed {
		delete(f, name)
	}
	if untrusted {
		f["call"] = func(any, ...any) (string, error) { return "", errors.New("call is not offered") }
	}
	f[tickName] = func() (string, error) {
		if steps == nil {
			return "", nil
		}
		if *steps++; *steps > MaxSteps {
			return "", limitErr("more than %d loop iterations or template calls", MaxSteps)
		}
		return "", ctx.Err()
	}
	return f
}

// check walks tmpl's trees once parsed: it puts a step at the start of
// every range body and defined template, and refuses a secret call that
// is not `secret "LITERAL"` with a reference the grammar accepts. It
// returns the references the template reads.
func check(tmpl *template.Template, parseRef func(string) error) ([]string, error) {
	var refs []string
	var bad error
	// In a fixed order (the root, then the others by name): the daemon and
	// a worker each parse the text, and must find the same references.
	all := tmpl.Templates()
	slices.SortFunc(all, func(a, b *template.Template) int {
		switch {
		case a.Name() == tmpl.Name():
			return -1
		case b.Name() == tmpl.Name():
			return 1
		}
		return strings.Compare(a.Name(), b.Name())
	})
	for _, t := range all {
		if t.Tree == nil || t.Tree.Root == nil {
			continue
		}
		// Every template, the root too (it may call itself), spends a step
		// each time it runs.
		prependTick(t.Tree.Root)
		secret := func(cmd *parse.CommandNode, piped bool) {
			lit, ok := (*parse.StringNode)(nil), len(cmd.Args) == 2 && !piped
			if ok {
				lit, ok = cmd.Args[1].(*parse.StringNode)
			}
			loc, _ := t.Tree.ErrorContext(cmd)
			switch {
			case bad != nil:
			case !ok:
				bad = fmt.Errorf("%s: secret takes one quoted reference, such as secret \"aws:prod/db#password\"", loc)
			default:
				if err := parseRef(lit.Text); err != nil {
					bad = fmt.Errorf("%s: %w", loc, err)
				}
				refs = append(refs, lit.Text)
			}
		}
		walker{secret}.walk(t.Tree.Root)
	}
	return refs, bad
}

// walker visits a tree, calling secret for every command that names the
// secret function.
type walker struct {
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
