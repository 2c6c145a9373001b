package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shellProvider is an exec provider written as a shell script, as a user
// would write one.
const shellProvider = `#!/bin/sh
# secretfs exec provider: get KEY [VERSION] | list [DIR]
case "$1" in
get)
  case "$2" in
  db/password) printf 's3cr3t' ;;
  db/json) printf '{"user":"app","port":5432}' ;;
  passed) printf '%s' "$SFS_PASSED" ;;
  denied) echo "policy says no" >&2; exit 5 ;;
  hang) (sleep 5; touch "$MARKER") & sleep 60 ;;
  huge) head -c 3000000 /dev/zero ;;
  garbage) exit 77 ;;
  versioned) [ -n "$3" ] && exit 2; printf 'current' ;;
  *) exit 3 ;;
  esac ;;
list)
  case "$2" in
  "") printf 'db/\npassed\nversioned\n' ;;
  db) printf 'password\njson\n' ;;
  *) exit 3 ;;
  esac ;;
*) exit 2 ;;
esac
`

func TestExecProvider(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "provider.sh")
	if err := os.WriteFile(script, []byte(shellProvider), 0o755); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "grandchild-outlived-the-call")
	conf := filepath.Join(dir, "secretfs.yaml")
	os.WriteFile(conf, []byte("exec-providers:\n  - name: cfg\n    command: ["+script+"]\n    env: [SFS_PASSED, MARKER]\n    timeout: 1s\n"), 0o600)
	d := mount(t, []string{"SFS_PASSED=passed-through", "MARKER=" + marker},
		"--exec-provider", "sh="+script, "--config", conf, "--timeout", "1s", "--env-allow", "NONE")

	if got := readDir(t, d.Dir); strings.Join(got, ",") != "cfg,env,sh" {
		t.Errorf("ls / = %q: defining an exec provider enables it", got)
	}
	if got := readDir(t, d.Path("sh", "db")); strings.Join(got, ",") != "json,password" {
		t.Errorf("ls sh/db = %q", got)
	}
	for p, want := range map[string]string{"sh/db/password": "s3cr3t", "sh/db/json#port": "5432", "sh/versioned": "current", "cfg/passed": "passed-through"} {
		if got, err := os.ReadFile(d.Path(p)); err != nil || string(got) != want {
			t.Errorf("cat %s = %q, %v; want %q", p, got, err, want)
		}
	}
	// Without env: passed through, the variable is not there.
	if got, err := os.ReadFile(d.Path("sh", "passed")); err != nil || string(got) != "" {
		t.Errorf("a variable not passed through: %q, %v", got, err)
	}
	for p, errno := range map[string]syscall.Errno{
		"sh/nope": syscall.ENOENT, "sh/denied": syscall.EACCES, "sh/versioned@v1": syscall.ENOENT,
		"sh/huge": syscall.EIO, "sh/garbage": syscall.EIO,
	} {
		_, err := os.ReadFile(d.Path(p))
		wantErrno(t, p, err, errno)
	}
	start := time.Now()
	_, err := os.ReadFile(d.Path("cfg", "hang"))
	wantErrno(t, "a hanging program", err, syscall.EIO)
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("the hang took %v with a 1s timeout", el)
	}
	time.Sleep(5500*time.Millisecond - time.Since(start))
	if _, err := os.Stat(marker); err == nil {
		t.Error("a grandchild of the hanging program outlived the call")
	}
	d.waitLog(t, "policy says no", "the program's stderr was not logged")
	if strings.Contains(d.Stderr(), "s3cr3t") {
		t.Errorf("a value reached the log")
	}
	if out, stderr, code := secretfs(t, nil, "get", "--exec-provider", "sh="+script, "sh:db/password"); code != 0 || out != "s3cr3t" {
		t.Errorf("secretfs get sh:db/password = %q, exit %d, %s", out, code, stderr)
	}
	if _, _, code := secretfs(t, nil, "get", "--exec-provider", "sh="+script, "sh:denied"); code != 5 {
		t.Errorf("secretfs get of a denied secret: exit %d, want 5", code)
	}
	// Trust: a program others may change is refused.
	os.Chmod(script, 0o777)
	if _, stderr, code := secretfs(t, nil, "get", "--exec-provider", "sh="+script, "sh:db/password"); code == 0 || !strings.Contains(stderr, "writable") {
		t.Errorf("a world-writable program: exit %d, %q; want refused", code, stderr)
	}
	os.Chmod(script, 0o755)
}

// Keys that start with '-' became options (cat MNT/p/--help ran `PROGRAM
// get --help`), and a descendant that left the process group wrote into the
// value after the program exited.
func TestExecProviderArgumentsAndDescendants(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "provider.sh")
	ran := filepath.Join(dir, "ran-with")
	late := filepath.Join(dir, "late")
	body := `#!/bin/sh
echo "$@" >> ` + ran + `
case "$2" in
late) setsid sh -c "sleep .5; printf LATE; touch ` + late + `" & sleep .2; printf early ;;
*) printf 'value' ;;
esac
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	d := mount(t, nil, "--exec-provider", "sh="+script, "--timeout", "2s", "--env-allow", "NONE")
	_, err := os.ReadFile(d.Path("sh", "--help"))
	wantErrno(t, "sh/--help", err, syscall.ENOENT)
	if data, _ := os.ReadFile(ran); strings.Contains(string(data), "--help") {
		t.Errorf("the program ran with --help: %q", data)
	}
	if got, err := os.ReadFile(d.Path("sh", "late")); err != nil || string(got) != "early" {
		t.Errorf("cat sh/late = %q, %v; want early (nothing written after the program exited)", got, err)
	}
	time.Sleep(time.Second)
	if _, err := os.Stat(late); err == nil {
		t.Error("the detached descendant outlived the call")
	}
}

// A program the daemon runs never holds the mount's /dev/fuse: go-fuse
// opened it without close-on-exec, and an exec provider's program (like a
// render worker) inherited it, and so the channel that answers the mount.
func TestProgramsHoldNoFuseChannel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "fds.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = get ] || exit 2\nfor f in /proc/self/fd/*; do readlink \"$f\"; done; exit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := mount(t, nil, "--exec-provider", "fds="+script, "--env-allow", "NONE")
	got, err := os.ReadFile(d.Path("fds", "x"))
	if err != nil {
		t.Fatalf("%v\n%s", err, d.Stderr())
	}
	if strings.Contains(string(got), "/dev/fuse") {
		t.Errorf("the program's descriptors: %q, want no /dev/fuse", got)
	}
}
