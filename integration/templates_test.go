package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// A value that a shell must read back exactly.
const trickyValue = "it's \"quoted\", $HOME and ${X} `tick` back\\slash  two spaces\nand a second line"

func TestTemplatesOverEnvKumoAndVault(t *testing.T) {
	t.Parallel()
	k := awsFixture(t)
	v := vaultShared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := k.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String("tmpl/api-key"), SecretString: aws.String("aws-one")}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Client().Logical().WriteWithContext(ctx, "secret/data/tmpl/db", map[string]any{"data": map[string]any{"user": "app", "password": trickyValue}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	envTmpl := filepath.Join(dir, "app.env.tmpl")
	os.WriteFile(envTmpl, []byte(`API_KEY={{ secret "aws:tmpl/api-key" | quote }}
DB_USER={{ secret "vault:secret/tmpl/db#user" | quote }}
DB_PASSWORD={{ secret "vault:secret/tmpl/db#password" | quote }}
REGION={{ secret "env:SFS_TPL_REGION" | quote }}
`), 0o600)
	conf := filepath.Join(dir, "secretfs.yaml")
	os.WriteFile(conf, []byte(`templates:
  - name: config.json
    mode: "0440"
    text: '{{ dict "user" (secret "vault:secret/tmpl/db#user") "key" (secret "aws:tmpl/api-key") | toJSON }}'
  - name: broken.env
    text: 'X={{ secret "env:SFS_TPL_MISSING" }}'
`), 0o600)
	env := append(append(k.Env(t), v.Env(t, "root")...), "SFS_TPL_REGION=eu-west-1")
	d := mount(t, env, "--providers", "env,aws,vault", "--env-allow", "SFS_TPL_*", "--ttl", "300ms",
		"--template", "app.env="+envTmpl, "--config", conf)

	if got := readDir(t, d.Path("templates")); strings.Join(got, ",") != "app.env,broken.env,config.json" {
		t.Errorf("ls templates = %q", got)
	}
	// bash reads the .env back exactly.
	out, err := exec.Command("bash", "-c", `set -a; . "$1"; printf '%s|%s|%s|%s' "$API_KEY" "$DB_USER" "$DB_PASSWORD" "$REGION"`, "bash", d.Path("templates", "app.env")).CombinedOutput()
	if want := "aws-one|app|" + trickyValue + "|eu-west-1"; err != nil || string(out) != want {
		t.Errorf("sourcing the rendered .env in bash: %q, %v; want %q", out, err, want)
	}
	if got, err := os.ReadFile(d.Path("templates", "config.json")); err != nil || string(got) != `{"key":"aws-one","user":"app"}` {
		t.Errorf("config.json = %q, %v", got, err)
	}
	if st, err := os.Stat(d.Path("templates", "config.json")); err != nil || st.Mode().Perm() != 0o440 {
		t.Errorf("config.json mode: %v, %v; want 0440", st, err)
	}
	_, err = os.ReadFile(d.Path("templates", "broken.env"))
	wantErrno(t, "a template whose secret is missing", err, syscall.EIO)
	d.waitLog(t, "env:SFS_TPL_MISSING", "the log names the missing reference")
	if strings.Contains(d.Stderr(), "aws-one") || strings.Contains(d.Stderr(), "second line") {
		t.Errorf("a value reached the log")
	}

	// A rotation in kumo shows up in the render within TTL + 1s, whole.
	held, err := os.Open(d.Path("templates", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := k.Client().PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String("tmpl/api-key"), SecretString: aws.String("aws-two-longer")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 1300*time.Millisecond, "the rotation shows in the render", func() bool {
		got, err := os.ReadFile(d.Path("templates", "config.json"))
		return err == nil && string(got) == `{"key":"aws-two-longer","user":"app"}`
	})
	if got, err := readRest(held); err != nil || string(got) != `{"key":"aws-one","user":"app"}` {
		t.Errorf("the descriptor held across the rotation read %q, %v; want the old render whole", got, err)
	}
}

func TestTemplateSyntaxErrorFailsTheStart(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.tmpl")
	os.WriteFile(bad, []byte("first line\n{{ secret \"env:X\" \n"), 0o600)
	_, stderr, code := secretfs(t, nil, "mount", "--template", "bad="+bad, t.TempDir())
	if code != 2 || !strings.Contains(stderr, bad+":2") {
		t.Errorf("a template with a syntax error: exit %d, %q; want 2 and %s:2", code, stderr, bad)
	}
	// As root, a template others may change is refused.
	open := filepath.Join(t.TempDir(), "open.tmpl")
	os.WriteFile(open, []byte("x"), 0o666)
	os.Chmod(open, 0o666)
	if _, stderr, code := secretfs(t, nil, "mount", "--template", "open="+open, t.TempDir()); os.Geteuid() == 0 && (code != 2 || !strings.Contains(stderr, "writable")) {
		t.Errorf("a world-writable template: exit %d, %q; want refused", code, stderr)
	}
}

func TestRenderCommand(t *testing.T) {
	t.Parallel()
	tmpl := filepath.Join(t.TempDir(), "t.tmpl")
	os.WriteFile(tmpl, []byte(`V={{ secret "env:SFS_RENDER_V" | quote }}`+"\n"), 0o600)
	out, stderr, code := secretfs(t, []string{"SFS_RENDER_V=" + trickyValue}, "render", tmpl)
	if code != 0 {
		t.Fatalf("render: exit %d, %s", code, stderr)
	}
	script := filepath.Join(t.TempDir(), "out.env")
	os.WriteFile(script, []byte(out), 0o600)
	back, err := exec.Command("bash", "-c", `set -a; . "$1"; printf '%s' "$V"`, "bash", script).Output()
	if err != nil || string(back) != trickyValue {
		t.Errorf("render's output sourced in bash: %q, %v", back, err)
	}
	if _, _, code := secretfs(t, nil, "render", tmpl); code != 3 {
		t.Errorf("render with the secret missing: exit %d, want 3", code)
	}
}
