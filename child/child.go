// Package child runs a program with secrets in its environment, as Vault
// Agent's exec mode, chamber and `op run` do, for programs that read their
// configuration only from the environment (secretfs exec).
//
// The secrets are read through the engine (package cache), so they obey its
// freshness and stale rules; nothing is written to disk, and no value ever
// appears in an argument, a log line or an error. Resolve reads them:
//
//   - a Var names one variable and its reference (--env NAME=REF);
//   - a Dir adds every secret below a directory (--env-from PROVIDER:DIR/),
//     each named by EnvName.
//
// Run starts the program and stays its parent: the program keeps the
// terminal (it is in the same process group, so Ctrl-C and job control
// reach it from the terminal), signals sent to secretfs are forwarded to
// it, and Run returns its exit status (128+N for a signal N). With
// Restart, Run keeps what the environment was made of fresh (cache.Hold)
// and, when a value changes, stops the program (StopSignal, then SIGKILL
// after StopTimeout) and starts it again with the new environment, as
// Vault Agent's restart_on_secret_changes does; a refresh that fails keeps
// the program as it is.
package child

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
)

// Var is one variable of the environment, from a secret.
type Var struct {
	Name string
	Ref  resolver.Reference
}

// Dir is a directory whose every secret becomes a variable.
type Dir struct {
	Provider, Dir string
}

func (d Dir) String() string { return d.Provider + ":" + d.Dir + "/" }

// Engine is what Resolve and Run need of the cache.
type Engine interface {
	Get(ctx context.Context, ref resolver.Reference) (cache.Value, error)
	List(ctx context.Context, provider, dir string) (*cache.Listing, time.Duration, error)
	Hold(ref resolver.Reference) (release func())
	OnChange(f func(cache.Change))
}

// ErrName is a variable's name that cannot be used: not a name, given
// twice, or already set (without override). The command line is wrong.
var ErrName = errors.New("environment variable")

// maxDirKeys bounds what one --env-from adds.
const maxDirKeys = 1000

// EnvName is the variable of the secret at rel below an --env-from
// directory: upper case, with "/", "-" and "." as "_". A name that is
// still not a variable's ([A-Z_][A-Z0-9_]*) is an error.
func EnvName(rel string) (string, error) {
	n := strings.ToUpper(strings.NewReplacer("/", "_", "-", "_", ".", "_").Replace(rel))
	if !ValidName(n) {
		return "", fmt.Errorf("%q cannot be an environment variable's name (%q)", rel, n)
	}
	return n, nil
}

// ValidName reports whether n is a portable variable name.
func ValidName(n string) bool {
	if n == "" || n[0] >= '0' && n[0] <= '9' {
		return false
	}
	for _, c := range n {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Env is what Resolve read: every variable and the reference it came
// from.
type Env struct {
	Names []string                      // sorted
	Refs  map[string]resolver.Reference // by name
	Vals  map[string][]byte             // by name
}

// sum is a hash of the whole environment made of the secrets (what a
// restart compares).
func (e Env) sum() [32]byte {
	h := sha256.New()
	for _, n := range e.Names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(e.Vals[n]))
		h.Write(e.Vals[n])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// keys are the values (no field) the environment is made of.
func (e Env) keys() []resolver.Reference {
	var out []resolver.Reference
	for _, n := range e.Names {
		r := e.Refs[n]
		r.Field = ""
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// Resolve reads vars and every secret of dirs through eng. Two variables
// of one name are an error; so is a secret that cannot be read (the error
// names its reference, and has its kind: exit codes as for get).
func Resolve(ctx context.Context, eng Engine, vars []Var, dirs []Dir) (Env, error) {
	env := Env{Refs: map[string]resolver.Reference{}, Vals: map[string][]byte{}}
	add := func(name string, ref resolver.Reference, from string) error {
		if old, ok := env.Refs[name]; ok {
			return fmt.Errorf("%w %s is given twice (%s and %s)", ErrName, name, old, from)
		}
		env.Refs[name] = ref
		return nil
	}
	for _, v := range vars {
		if err := add(v.Name, v.Ref, v.Ref.String()); err != nil {
			return Env{}, err
		}
	}
	for _, d := range dirs {
		keys, err := walk(ctx, eng, d)
		if err != nil {
			return Env{}, err
		}
		for _, k := range keys {
			rel := strings.TrimPrefix(strings.TrimPrefix(k, d.Dir), "/")
			name, err := EnvName(rel)
			if err != nil {
				return Env{}, fmt.Errorf("--env-from %s: %w: %v", d, ErrName, err)
			}
			if changesHowProgramsRun(name) {
				return Env{}, fmt.Errorf("--env-from %s: %w %s (from %s) would change how programs run; only --env sets it", d, ErrName, name, rel)
			}
			if err := add(name, resolver.Reference{Provider: d.Provider, Key: k}, d.String()+rel); err != nil {
				return Env{}, err
			}
		}
	}
	for name, ref := range env.Refs {
		v, err := eng.Get(ctx, ref)
		if err != nil {
			return Env{}, fmt.Errorf("%s: %w", name, err)
		}
		env.Vals[name] = v.Value
		env.Names = append(env.Names, name)
	}
	slices.Sort(env.Names)
	return env, nil
}

// walk lists every key below d, depth first, at most maxDirKeys.
func walk(ctx context.Context, eng Engine, d Dir) ([]string, error) {
	var keys []string
	todo := []string{d.Dir}
	for len(todo) > 0 {
		dir := todo[0]
		todo = todo[1:]
		l, _, err := eng.List(ctx, d.Provider, dir)
		if errors.Is(err, errors.ErrUnsupported) {
			return nil, fmt.Errorf("--env-from %s: provider %s cannot list", d, d.Provider)
		}
		if err != nil {
			return nil, fmt.Errorf("--env-from %s: %w", d, err)
		}
		for _, n := range l.Names() {
			if !resolver.Listable(strings.TrimSuffix(n, "/")) {
				continue
			}
			full := n
			if dir != "" {
				full = dir + "/" + n
			}
			if sub, isDir := strings.CutSuffix(full, "/"); isDir {
				todo = append(todo, sub)
				continue
			}
			keys = append(keys, full)
			if len(keys) > maxDirKeys {
				return nil, fmt.Errorf("--env-from %s: more than %d secrets", d, maxDirKeys)
			}
		}
	}
	if len(keys) == 0 && d.Dir != "" {
		return nil, fmt.Errorf("--env-from %s: %w: no secrets there", d, resolver.ErrNotFound)
	}
	slices.Sort(keys)
	return keys, nil
}

// Environ is the program's environment: base (the caller's, or PATH
// alone with clean), then the secrets. A secret whose name base already
// has is an error unless override.
func Environ(base []string, env Env, override bool) ([]string, error) {
	out := make([]string, 0, len(base)+len(env.Names))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if _, ours := env.Vals[name]; ours {
			if !override {
				return nil, fmt.Errorf("%w %s is already set (--override replaces it)", ErrName, name)
			}
			continue
		}
		out = append(out, kv)
	}
	for _, n := range env.Names {
		if bytes.IndexByte(env.Vals[n], 0) >= 0 {
			return nil, fmt.Errorf("%w: the value of %s holds a NUL byte, which no environment can hold", errValue, n)
		}
		out = append(out, n+"="+string(env.Vals[n]))
	}
	return out, nil
}

// errValue is a value that cannot be put in an environment.
var errValue = errors.New("cannot be set")

// loaderNames are variables that change how programs run (the dynamic
// loader, shells, interpreters): --env-from never sets them, so that who
// may create a secret below a directory may not run code in the command.
// --env names them on purpose.
var loaderNames = []string{"LD_", "DYLD_", "BASH_ENV", "ENV", "IFS", "PS4", "SHELLOPTS", "BASHOPTS", "CDPATH", "GLOBIGNORE",
	"NODE_OPTIONS", "NODE_PATH", "PYTHON", "PERL5", "PERLLIB", "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
	"GCONV_PATH", "LOCPATH", "MALLOC_", "GLIBC_TUNABLES", "PATH", "HOME", "TMPDIR", "SSL_CERT_", "GIT_"}

// changesHowProgramsRun reports whether n is, or starts with, one of
// loaderNames (ENV, IFS, PS4, PATH, HOME, TMPDIR and the like exactly).
func changesHowProgramsRun(n string) bool {
	for _, p := range loaderNames {
		if strings.HasSuffix(p, "_") && strings.HasPrefix(n, p) || n == p ||
			(p == "PYTHON" || p == "PERL5") && strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}
