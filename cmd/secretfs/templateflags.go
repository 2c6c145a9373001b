package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/secretfs/secretfs/config"
	"github.com/secretfs/secretfs/fs"
	"github.com/secretfs/secretfs/providers/exec"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

// templateDef is one template of the config file's templates: list.
type templateDef struct {
	Name   string  `yaml:"name"`
	Source string  `yaml:"source"`
	Text   *string `yaml:"text"`
	UID    *uint32 `yaml:"uid"`
	GID    *uint32 `yaml:"gid"`
	Mode   *string `yaml:"mode"`
}

// loadTemplates parses the templates of --template NAME=FILE and of the
// config file. A syntax error names FILE:LINE.
func loadTemplates(flags []string, section *yaml.Node) ([]*templates.Template, error) {
	var defs []templateDef
	for _, f := range flags {
		name, file, ok := strings.Cut(f, "=")
		if !ok || name == "" || file == "" {
			return nil, usagef("--template %q: want NAME=FILE", f)
		}
		defs = append(defs, templateDef{Name: name, Source: file})
	}
	if section != nil {
		var fromFile []templateDef
		if err := config.Decode(section, &fromFile); err != nil {
			return nil, usagef("--config: templates: %v", err)
		}
		defs = append(defs, fromFile...)
	}
	var out []*templates.Template
	seen := map[string]bool{}
	for _, d := range defs {
		if !resolver.Listable(d.Name) || seen[d.Name] {
			return nil, usagef("template %q: want a file name, once", d.Name)
		}
		seen[d.Name] = true
		var t *templates.Template
		var err error
		switch {
		case d.Text != nil && d.Source == "":
			t, err = templates.Parse(d.Name, "", *d.Text)
		case d.Text == nil && d.Source != "":
			if err := exec.Trusted(d.Source); err != nil {
				return nil, usagef("template %q: %v", d.Name, err)
			}
			t, err = templates.ParseFile(d.Name, d.Source)
		default:
			return nil, usagef("template %q: give source (a file) or text, one of them", d.Name)
		}
		if err != nil {
			return nil, usagef("%v", err)
		}
		t.UID, t.GID = d.UID, d.GID
		if d.Mode != nil {
			m, err := strconv.ParseUint(*d.Mode, 8, 32)
			if err != nil || m == 0 || m > 0o777 {
				return nil, usagef("template %q: mode %q: want octal permission bits", d.Name, *d.Mode)
			}
			mode := uint32(m)
			t.Mode = &mode
		}
		out = append(out, t)
	}
	return out, nil
}

const renderUsage = `Usage: secretfs render [flags] FILE
Renders the template FILE once, without mounting, and prints it. Every
provider a "secret" call names is enabled, with its flags.
`

func runRender(args []string, stdout, stderr io.Writer) error {
	c := newCommon("render")
	if err := c.parse(args, stdout, renderUsage); err != nil {
		return helpOK(err)
	}
	if c.flagSet.NArg() != 1 {
		return usagef("render takes one template FILE")
	}
	t, err := templates.ParseFile("render", c.flagSet.Arg(0))
	if err != nil {
		return usagef("%v", err)
	}
	for _, ref := range t.Refs() {
		if !slices.ContainsFunc(c.execs, func(d execDef) bool { return d.Name == ref.Provider }) {
			c.enable(ref.Provider)
		}
	}
	return c.withResolver(stderr, func(ctx context.Context, r *resolver.Resolver) error {
		out, _, err := t.Render(ctx, func(ctx context.Context, ref resolver.Reference) ([]byte, error) {
			s, err := r.Get(ctx, ref)
			return s.Value, err
		})
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
	})
}

// templateProviders refuses a template that reads a provider this binary
// does not have, at start rather than at the first read.
func (c *common) templateProviders(ts []*templates.Template) error {
	for _, t := range ts {
		for _, ref := range t.Refs() {
			if err := c.notCompiled(ref.Provider); err != nil {
				return fmt.Errorf("template %s reads %s: %w", t.Name, ref, err)
			}
		}
	}
	return nil
}

// reserved refuses a provider that would take the templates directory.
func reservedNames(names []string, templates int) error {
	for _, n := range names {
		if n == fs.TemplatesDir && templates > 0 {
			return fmt.Errorf("provider %q: the name is taken by the templates directory", n)
		}
	}
	return nil
}
