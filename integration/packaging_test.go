package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A subset of the providers, as make build PROVIDERS="..." builds it.
type subset struct {
	name      string
	tags      string
	providers string // the version line
	lacks     []string
}

var subsets = []subset{
	{"all", "", "env, aws, vault, gcp, azure", nil},
	{"env", "secretfs_no_aws,secretfs_no_vault,secretfs_no_gcp,secretfs_no_azure", "env", []string{"aws", "vault", "gcp", "azure"}},
	{"aws", "secretfs_no_env,secretfs_no_vault,secretfs_no_gcp,secretfs_no_azure", "aws", []string{"env", "vault", "gcp", "azure"}},
	{"vault", "secretfs_no_env,secretfs_no_aws,secretfs_no_gcp,secretfs_no_azure", "vault", []string{"env", "aws", "gcp", "azure"}},
	{"gcp", "secretfs_no_env,secretfs_no_aws,secretfs_no_vault,secretfs_no_azure", "gcp", []string{"env", "aws", "vault", "azure"}},
	{"azure", "secretfs_no_env,secretfs_no_aws,secretfs_no_vault,secretfs_no_gcp", "azure", []string{"env", "aws", "vault", "gcp"}},
}

// What each provider links, and what must not be linked without it.
var linkedBy = map[string]string{
	"aws":   "github.com/aws/aws-sdk-go-v2",
	"vault": "github.com/hashicorp/vault/api",
	"gcp":   "cloud.google.com/go/secretmanager",
	"azure": "github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets",
}

// buildSubset builds the binary of s (stripped, as a release is) and
// returns its path.
func buildSubset(t *testing.T, s subset) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "secretfs-"+s.name)
	cmd := exec.Command("go", "build", "-tags", s.tags, "-ldflags", "-s -w", "-o", bin, "github.com/secretfs/secretfs/cmd/secretfs")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %q: %v\n%s", s.tags, err, out)
	}
	return bin
}

func TestProviderSubsets(t *testing.T) {
	t.Parallel()
	for _, s := range subsets {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			bin := buildSubset(t, s)
			if st, err := os.Stat(bin); err == nil {
				t.Logf("%s: %.1f MB", s.name, float64(st.Size())/1e6)
			}
			mods, err := exec.Command("go", "version", "-m", bin).Output()
			if err != nil {
				t.Fatal(err)
			}
			for p, module := range linkedBy {
				has := strings.Contains(string(mods), "\tdep\t"+module)
				if want := !strings.Contains(strings.Join(s.lacks, ","), p); has != want {
					t.Errorf("links %s: %v, want %v", module, has, want)
				}
			}
			out, err := exec.Command(bin, "version").Output()
			if err != nil || !strings.Contains(string(out), "\nproviders: "+s.providers+"\n") {
				t.Errorf("version = %q, %v; want providers: %s", out, err, s.providers)
			}
			for _, missing := range s.lacks {
				for _, args := range [][]string{
					{"mount", "--providers", missing, t.TempDir()},
					{"get", missing + ":x"},
					{"ls", missing + ":"},
				} {
					cmd := exec.Command(bin, args...)
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					err := cmd.Run()
					code := -1
					if ee, ok := err.(*exec.ExitError); ok {
						code = ee.ExitCode()
					}
					want := `provider "` + missing + `" is not compiled into this binary, which has ` + s.providers
					if code != 2 || !strings.Contains(stderr.String(), want) {
						t.Errorf("%v: exit %d, %q; want 2 and %q", args, code, stderr.String(), want)
					}
				}
			}
		})
	}
}

// The bash completion is a function that complete -F registers; loaded in
// bash it completes flags, providers, and the mountpoints of running
// secretfs mounts.
func TestBashCompletion(t *testing.T) {
	t.Parallel()
	d := envMount(t)
	script, _, code := secretfs(t, nil, "completion", "bash")
	if code != 0 || !strings.Contains(script, "complete -F _secretfs secretfs") {
		t.Fatalf("completion bash: exit %d", code)
	}
	file := filepath.Join(t.TempDir(), "secretfs.bash")
	os.WriteFile(file, []byte(script), 0o600)
	complete := func(words ...string) string {
		t.Helper()
		prog := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _secretfs; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", append([]string{"-c", prog, "bash", file}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"secretfs", "mount", "--pro"}, "--providers"},
		{[]string{"secretfs", "mou"}, "mount"},
		{[]string{"secretfs", "mount", "--providers", "env,va"}, "env,vault"},
		{[]string{"secretfs", "get", "va"}, "vault:"},
		{[]string{"secretfs", "csi-provider", "--allow-e"}, "--allow-env"},
		{[]string{"secretfs", "completion", ""}, "bash\nzsh"},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("complete %q = %q, want %q", tc.words, got, tc.want)
		}
	}
	if got := complete("secretfs", "status", d.Dir[:len(d.Dir)-3]); !strings.Contains(got, d.Dir) {
		t.Errorf("complete status %s... = %q, want the running mount %s", d.Dir[:len(d.Dir)-3], got, d.Dir)
	}
}

func TestManPage(t *testing.T) {
	t.Parallel()
	page, _, code := secretfs(t, nil, "man")
	if code != 0 || !strings.HasPrefix(page, ".TH SECRETFS 1") {
		t.Fatalf("man: exit %d, %.40q", code, page)
	}
	for _, flag := range []string{`\-\-providers`, `\-\-ttl`, `\-\-max\-stale`, `\-\-endpoint`, `\-\-allow\-node\-credentials`, `\-\-uid`} {
		if !strings.Contains(page, ".B "+flag) {
			t.Errorf("the manual page lacks %s", flag)
		}
	}
	if _, err := exec.LookPath("man"); err != nil {
		t.Skip("no man(1) here to render the page")
	}
	cmd := exec.Command("man", "-l", "-")
	cmd.Stdin = strings.NewReader(page)
	cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=80")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mount secrets as files") || strings.Contains(string(out), "warning") {
		t.Errorf("man -l: %v\n%s", err, out)
	}
}

// The zsh completion runs the bash function through bashcompinit, sourced
// (compdef through complete -F) or from $fpath as _secretfs.
func TestZshCompletion(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("zsh is not installed here (Debian package zsh)")
	}
	script, _, code := secretfs(t, nil, "completion", "zsh")
	if code != 0 || !strings.HasPrefix(script, "#compdef secretfs\n") {
		t.Fatalf("completion zsh: exit %d", code)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "_secretfs"), []byte(script), 0o644)
	zsh := func(prog string) string {
		t.Helper()
		cmd := exec.Command("zsh", "-fc", prog)
		cmd.Env = append(os.Environ(), "HOME="+dir, "FPATH_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("zsh: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// Sourced: registered, and the function completes flags (zsh itself
	// then keeps those that match what was typed).
	got := zsh(`autoload -U compinit && compinit -u -D; source $FPATH_DIR/_secretfs; print -r -- ${_comps[secretfs]};
		setopt ksharrays; COMP_WORDS=(secretfs mount --pro); COMP_CWORD=2; __secretfs_bash; print -rl -- "${COMPREPLY[@]}"`)
	lines := strings.Split(got, "\n")
	if lines[0] != "_bash_complete -F __secretfs_bash" || !strings.Contains(got, "\n--providers\n") {
		t.Errorf("sourced: %q", got)
	}
	// From $fpath: compinit finds it by its #compdef line.
	if got := zsh(`fpath=($FPATH_DIR $fpath); autoload -U compinit && compinit -u -D; print -r -- ${_comps[secretfs]}`); got != "_secretfs" {
		t.Errorf("from $fpath: _comps[secretfs] = %q, want _secretfs", got)
	}
}
