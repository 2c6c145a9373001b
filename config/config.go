// Package config fills one typed configuration from three sources, in this
// order of precedence: command-line flags, SECRETFS_<FLAG> environment
// variables, and a YAML file (--config).
//
// The configuration is the set of variables a pflag.FlagSet binds: each
// flag's long name is its key in the environment (upper-cased, dashes as
// underscores) and in the file (as written, or with underscores). Values in
// the file are typed as YAML types them: durations as strings ("1m"), lists
// as lists, numbers and booleans as themselves. A key that names no flag is
// an error that names it. Settings with structure of their own (later: rules,
// templates, exec providers) get list keys of their own; Sections collects
// them for the commands that know them.
//
// Load is pure: it fills a fresh FlagSet and reports, so that a reload
// (SIGHUP) builds a new configuration the same way and compares it with the
// running one.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// FlagName is the flag that names the file.
const FlagName = "config"

// EnvName is the environment variable of a flag.
func EnvName(flag string) string {
	return "SECRETFS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Sources fills set, already parsed from the command line, from the
// environment and then the file that --config names (if set has that flag
// and it is set). It returns the file's sections: the keys that are no flag
// but are in sections (their raw YAML), for the caller to decode.
func Sources(set *pflag.FlagSet, lookupEnv func(string) (string, bool), sections []string) (map[string]*yaml.Node, error) {
	var err error
	set.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		if v, ok := lookupEnv(EnvName(f.Name)); ok {
			if serr := set.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s: %w", EnvName(f.Name), serr)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	f := set.Lookup(FlagName)
	if f == nil || f.Value.String() == "" {
		return nil, nil
	}
	data, err := os.ReadFile(f.Value.String())
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	return apply(set, f.Value.String(), data, sections)
}

// apply sets every flag the file names that no earlier source set.
func apply(set *pflag.FlagSet, path string, data []byte, sections []string) (map[string]*yaml.Node, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make(map[string]*yaml.Node)
	if doc.Kind == 0 { // an empty file
		return out, nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: want a mapping of settings", path)
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		name := strings.ReplaceAll(k.Value, "_", "-")
		if slices.Contains(sections, name) {
			out[name] = v
			continue
		}
		f := set.Lookup(name)
		if f == nil || name == FlagName {
			return nil, fmt.Errorf("%s:%d: unknown key %q", path, k.Line, k.Value)
		}
		if f.Changed {
			continue // the command line or the environment said otherwise
		}
		values, err := scalars(v)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", path, v.Line, k.Value, err)
		}
		if v.Kind == yaml.SequenceNode && !strings.HasSuffix(f.Value.Type(), "Slice") {
			return nil, fmt.Errorf("%s:%d: %s takes one value, not a list", path, v.Line, k.Value)
		}
		if len(values) == 0 {
			// An empty list: the flag's value is empty.
			if err := set.Set(name, ""); err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %w", path, v.Line, k.Value, err)
			}
		}
		for _, s := range values {
			if err := set.Set(name, s); err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %w", path, v.Line, k.Value, err)
			}
		}
	}
	return out, nil
}

// Decode decodes a section of the file (such as rules:) into v strictly:
// a key that v has no field for is an error that names it.
func Decode(section *yaml.Node, v any) error {
	var buf bytes.Buffer
	if err := yaml.NewEncoder(&buf).Encode(section); err != nil {
		return err
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	return dec.Decode(v)
}

// scalars returns a value's scalars: one, or a list's.
func scalars(v *yaml.Node) ([]string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		return []string{v.Value}, nil
	case yaml.SequenceNode:
		var out []string
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode {
				return nil, errors.New("want a list of plain values")
			}
			out = append(out, e.Value)
		}
		return out, nil
	default:
		return nil, errors.New("want a value or a list of values")
	}
}
