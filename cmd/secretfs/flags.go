package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/secretfs/secretfs/access"
	"github.com/secretfs/secretfs/config"
	"github.com/secretfs/secretfs/csi"
	"github.com/secretfs/secretfs/providers/exec"
	"github.com/secretfs/secretfs/resolver"
)

// backend is a provider the command line can enable. flags adds the
// provider's own flags to set and returns the functions that open it with
// the values they got.
type backend struct {
	name  string
	flags func(set *pflag.FlagSet) opener
	// podOptIn: csi-provider offers it to pods only when asked
	// (--allow-env), as it exposes the node plugin itself.
	podOptIn bool
}

// opener opens a provider: open for mount, get and ls; pod, when set, for
// one pod identity of csi-provider, which describes the provider with csi
// (its Open is pod with the logger).
type opener struct {
	open func(ctx context.Context, log *slog.Logger) (resolver.Provider, error)
	pod  func(ctx context.Context, log *slog.Logger, id csi.Identity) (resolver.Provider, error)
	csi  csi.Backend
	// section, when set, is a key of the config file the provider reads
	// (vault-issue:), given to configure.
	section   string
	configure func(*yaml.Node) error
	// brings are the names of providers this one brings with it (see
	// companions): a reference to one enables this one.
	brings []string
}

// companions is the ability of a provider to bring others with it (Vault's
// vault-issued), registered beside it.
type companions interface {
	Companions() []resolver.Provider
}

// backends lists the providers this binary has: each file that adds one
// appends it from init, under a build tag that leaves it out (see
// builtinProviders).
var backends []backend

// builtinProviders are the providers secretfs has, in the order they are
// listed. A binary carries those whose build tag (secretfs_no_NAME) was
// not given; exec providers are always there.
var builtinProviders = []string{"env", "aws", "vault", "gcp", "azure"}

// compiled is backends in builtinProviders' order (others, test ones,
// last).
func compiled() []backend {
	rank := func(name string) int {
		if i := slices.Index(builtinProviders, name); i >= 0 {
			return i
		}
		return len(builtinProviders)
	}
	out := slices.Clone(backends)
	slices.SortStableFunc(out, func(a, b backend) int { return rank(a.name) - rank(b.name) })
	return out
}

// flagPrefixes tell which provider a flag (or config key) belongs to.
var flagPrefixes = map[string]string{"aws-": "aws", "vault-": "vault", "env-allow": "env", "gcp-": "gcp", "azure-": "azure"}

// missingProviderHint explains an unknown flag or key that belongs to a
// provider this binary lacks.
func missingProviderHint(err error) string {
	msg := err.Error()
	for prefix, p := range flagPrefixes {
		if (strings.Contains(msg, "--"+prefix) || strings.Contains(msg, `"`+prefix) || strings.Contains(msg, `\"`+prefix)) &&
			!slices.Contains(compiledNames(), p) {
			return fmt.Sprintf(" (a flag of provider %q, which is not compiled into this binary, which has %s)", p, strings.Join(compiledNames(), ", "))
		}
	}
	return ""
}

// compiledNames names the providers of this binary, in order.
func compiledNames() []string {
	var names []string
	for _, b := range compiled() {
		names = append(names, b.name)
	}
	return names
}

// defaultProviders is what mount enables without --providers: env where
// the binary has it, otherwise every provider it has.
func defaultProviders() []string {
	names := compiledNames()
	if slices.Contains(names, "env") {
		return []string{"env"}
	}
	return names
}

// common holds the flags every command that reads secrets has.
type common struct {
	flagSet    *pflag.FlagSet
	providers  []string
	enabled    bool // enable replaced the default providers
	timeout    time.Duration
	logLevel   string
	logFormat  string
	configFile string
	openers    map[string]opener
	levelVar   slog.LevelVar // the logger's level, which a reload may change
	rules      *access.Rules // from the config file's rules:

	execFlags       []string   // --exec-provider NAME=PATH
	execConcurrency int        // --exec-concurrency
	execs           []execDef  // the exec providers, from the flags and the file
	templateSection *yaml.Node // the config file's templates:, for mount
	execSection     *yaml.Node // the config file's exec-providers:, to tell a reload's changes
	onChangeSection *yaml.Node // the config file's on-change:, for mount
	// alsoKnown are keys of the config file this command passes over: a
	// mount's settings, for exec, which takes a mount's file.
	alsoKnown []string
}

func newCommon(name string) *common {
	c := &common{flagSet: pflag.NewFlagSet(name, pflag.ContinueOnError), openers: make(map[string]opener)}
	c.flagSet.SetOutput(io.Discard) // errors are returned; --help prints to stdout
	c.flagSet.SortFlags = true
	c.flagSet.Usage = func() {}
	c.flagSet.StringSliceVar(&c.providers, "providers", defaultProviders(), "providers to enable, from: "+strings.Join(compiledNames(), ","))
	c.flagSet.DurationVar(&c.timeout, "timeout", resolver.DefaultTimeout, "deadline of every backend call")
	c.flagSet.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	c.flagSet.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	c.flagSet.StringArrayVar(&c.execFlags, "exec-provider", nil, "a program as a provider, NAME=PATH (repeatable; see the README's contract); defining one enables it")
	c.flagSet.IntVar(&c.execConcurrency, "exec-concurrency", exec.DefaultConcurrency, "most calls of one exec provider at once")
	c.flagSet.StringVar(&c.configFile, config.FlagName, "", "YAML file of settings: keys are the long flag names; flags and SECRETFS_* win over it")
	for _, b := range compiled() {
		c.openers[b.name] = b.flags(c.flagSet)
	}
	return c
}

// parse parses args, then fills every flag not given on the command line
// from SECRETFS_<FLAG> in the environment, then from the --config file. It
// returns pflag.ErrHelp after printing usage for --help.
func (c *common) parse(args []string, stdout io.Writer, usage string) error {
	err := c.flagSet.Parse(args)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, usage, "\nFlags:\n", c.flagSet.FlagUsages())
		return err
	}
	if err != nil {
		return usagef("%v%s", err, missingProviderHint(err))
	}
	names := append([]string{"rules", "exec-providers", "templates", "on-change"}, c.alsoKnown...)
	for _, o := range c.openers {
		if o.section != "" {
			names = append(names, o.section)
		}
	}
	sections, err := config.Sources(c.flagSet, os.LookupEnv, names)
	if err != nil {
		return usagef("%v%s", err, missingProviderHint(err))
	}
	for _, o := range c.openers {
		if o.section != "" && sections[o.section] != nil {
			if err := o.configure(sections[o.section]); err != nil {
				return usagef("--config: %s: %v", o.section, err)
			}
		}
	}
	if c.execs, err = c.execDefs(sections["exec-providers"]); err != nil {
		return err
	}
	c.templateSection, c.execSection, c.onChangeSection = sections["templates"], sections["exec-providers"], sections["on-change"]
	if c.rules, err = access.Parse(sections["rules"]); err != nil {
		return usagef("--config: %v", err)
	}
	return nil
}

func (c *common) logger(stderr io.Writer) (*slog.Logger, error) {
	level, err := c.level()
	if err != nil {
		return nil, err
	}
	c.levelVar.Set(level)
	opts := &slog.HandlerOptions{Level: &c.levelVar}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	default:
		return nil, usagef("--log-format %q: want text or json", c.logFormat)
	}
}

// level is the --log-level.
func (c *common) level() (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return 0, usagef("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	return level, nil
}

// enable adds the provider a reference names to those enabled (get, ls and
// render need no --providers); without --providers (or its setting in the
// environment or the file) it replaces mount's default. A name the binary
// does not have is left for open to report.
func (c *common) enable(name string) {
	for n, o := range c.openers {
		if slices.Contains(o.brings, name) {
			name = n
		}
	}
	if !c.flagSet.Changed("providers") && !c.enabled {
		c.providers, c.enabled = nil, true
	}
	if !slices.Contains(c.providers, name) {
		c.providers = append(c.providers, name)
	}
}

// notCompiled is the usage error for a provider secretfs has but this
// binary was built without (and no exec provider takes its name); nil for
// any other name.
func (c *common) notCompiled(name string) error {
	if _, ok := c.openers[name]; ok || !slices.Contains(builtinProviders, name) ||
		slices.ContainsFunc(c.execs, func(d execDef) bool { return d.Name == name }) {
		return nil
	}
	return usagef("provider %q is not compiled into this binary, which has %s (and exec providers); build one with it: make build PROVIDERS=\"...\"",
		name, strings.Join(compiledNames(), ", "))
}

// open opens the enabled providers, in the order given.
func (c *common) open(ctx context.Context, log *slog.Logger) ([]resolver.Provider, error) {
	if c.timeout <= 0 {
		return nil, usagef("--timeout must be positive")
	}
	for _, name := range c.providers {
		if err := c.notCompiled(strings.TrimSpace(name)); err != nil {
			return nil, err
		}
	}
	var out []resolver.Provider
	seen := make(map[string]bool)
	for _, name := range c.providers {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] || slices.ContainsFunc(c.execs, func(d execDef) bool { return d.Name == name }) {
			continue // an exec provider is opened below
		}
		seen[name] = true
		o, ok := c.openers[name]
		if !ok {
			return nil, usagef("--providers: unknown provider %q (have %s)", name, strings.Join(compiledNames(), ", "))
		}
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		p, err := o.open(ctx, log)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("provider %s: %w", name, err)
		}
		out = append(out, p)
		if cp, ok := p.(companions); ok {
			out = append(out, cp.Companions()...)
		}
	}
	execs, err := c.openExec(log)
	if err != nil {
		closeAll(out)
		return nil, err
	}
	out = append(out, execs...)
	if len(out) == 0 {
		return nil, usagef("--providers: no provider given (have %s)", strings.Join(compiledNames(), ", "))
	}
	return out, nil
}

// closeAll stops what providers run in the background (token renewal).
func closeAll(ps []resolver.Provider) {
	for _, p := range ps {
		if c, ok := p.(io.Closer); ok {
			c.Close()
		}
	}
}

// openResolver opens the enabled providers behind a resolver, under
// deadlines d (the flags', c.deadlines). The caller closes the providers
// (closeAll).
func (c *common) openResolver(ctx context.Context, log *slog.Logger, d resolver.Deadlines) (*resolver.Resolver, []resolver.Provider, error) {
	ps, err := c.open(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	r, err := resolver.New(ps...)
	if err != nil {
		closeAll(ps)
		return nil, nil, err
	}
	r.Deadlines = d
	return r, ps, nil
}
