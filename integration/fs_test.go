package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envVars is the environment every env-provider mount in this file gets.
var envVars = []string{
	"SFS_IT_API_KEY=hunter2-api-key",
	`SFS_IT_DB={"user":"app","password":"p@ss w0rd","port":5432,"opts":{"ssl":true}}`,
	"SFS_IT_THIRTY=012345678901234567890123456789",
	"VAULT_TOKEN=s.never-shown-token",
}

func envMount(t *testing.T, args ...string) *daemon {
	return mount(t, envVars, append([]string{"--env-allow", "SFS_IT_*", "--env-allow", "VAULT_*"}, args...)...)
}

func TestEnvCatAndLs(t *testing.T) {
	d := envMount(t)
	got, err := os.ReadFile(d.Path("env", "SFS_IT_API_KEY"))
	if err != nil || string(got) != "hunter2-api-key" {
		t.Fatalf("cat env/SFS_IT_API_KEY = %q, %v", got, err)
	}
	if names := readDir(t, d.Dir); !slices.Equal(names, []string{"env"}) {
		t.Errorf("ls / = %q, want [env]", names)
	}
	want := []string{"SFS_IT_API_KEY", "SFS_IT_DB", "SFS_IT_THIRTY"} // VAULT_TOKEN never, despite VAULT_*
	if names := readDir(t, d.Path("env")); !slices.Equal(names, want) {
		t.Errorf("ls env = %q, want %q", names, want)
	}
	out, err := exec.Command("cat", d.Path("env", "SFS_IT_API_KEY")).Output()
	if err != nil || string(out) != "hunter2-api-key" {
		t.Errorf("cat(1) = %q, %v", out, err)
	}
}

func TestEnvFields(t *testing.T) {
	d := envMount(t)
	tests := []struct{ name, want string }{
		{"SFS_IT_DB#user", "app"},
		{"SFS_IT_DB#password", "p@ss w0rd"},
		{"SFS_IT_DB#port", "5432"},
		{"SFS_IT_DB#opts", `{"ssl":true}`},
	}
	for _, tt := range tests {
		got, err := os.ReadFile(d.Path("env", tt.name))
		if err != nil || string(got) != tt.want {
			t.Errorf("cat env/%s = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestENOENT(t *testing.T) {
	d := envMount(t)
	for _, p := range []string{
		"env/NOT_SET_ANYWHERE", "env/SFS_IT_DB#nope", "env/SFS_IT_API_KEY#field", "env/VAULT_TOKEN",
		"env/SFS_IT_API_KEY@3", "nosuchprovider", "nosuchprovider/x", "env/HOME",
	} {
		_, err := os.ReadFile(d.Path(p))
		wantErrno(t, p, err, syscall.ENOENT)
	}
}

func TestEROFS(t *testing.T) {
	d := envMount(t)
	file := d.Path("env", "SFS_IT_API_KEY")
	dir := d.Path("env")
	ops := map[string]func() error{
		"open O_WRONLY": func() error { f, err := os.OpenFile(file, os.O_WRONLY, 0); f.Close(); return err },
		"open O_RDWR":   func() error { f, err := os.OpenFile(file, os.O_RDWR, 0); f.Close(); return err },
		"open O_TRUNC":  func() error { f, err := os.OpenFile(file, os.O_RDONLY|os.O_TRUNC, 0); f.Close(); return err },
		"open O_APPEND": func() error { f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0); f.Close(); return err },
		"create":        func() error { f, err := os.Create(filepath.Join(dir, "NEW")); f.Close(); return err },
		"mkdir":         func() error { return os.Mkdir(filepath.Join(dir, "d"), 0o700) },
		"unlink":        func() error { return os.Remove(file) },
		"rmdir":         func() error { return syscall.Rmdir(dir) },
		"rename":        func() error { return os.Rename(file, filepath.Join(dir, "OTHER")) },
		"chmod":         func() error { return os.Chmod(file, 0o644) },
		"chown":         func() error { return os.Chown(file, 1, 1) },
		"truncate":      func() error { return os.Truncate(file, 0) },
		"utimes":        func() error { return os.Chtimes(file, time.Now(), time.Now()) },
		"symlink":       func() error { return os.Symlink("x", filepath.Join(dir, "l")) },
		"link":          func() error { return os.Link(file, filepath.Join(dir, "l")) },
		"mknod":         func() error { return syscall.Mknod(filepath.Join(dir, "n"), syscall.S_IFIFO|0o600, 0) },
		"setxattr":      func() error { return syscall.Setxattr(file, "user.x", []byte("1"), 0) },
	}
	for name, op := range ops {
		wantErrno(t, name, op(), syscall.EROFS)
	}
	if got, _ := os.ReadFile(file); string(got) != "hunter2-api-key" {
		t.Errorf("value after write attempts = %q", got)
	}
}

func TestAttributes(t *testing.T) {
	tests := []struct {
		name              string
		args              []string
		uid, gid          uint32
		fileMode, dirMode uint32
	}{
		{"defaults", nil, uint32(os.Getuid()), uint32(os.Getgid()), 0o400, 0o500},
		{"flags", []string{"--uid", "1234", "--gid", "5678", "--file-mode", "0440", "--dir-mode", "0550"}, 1234, 5678, 0o440, 0o550},
		{"-o like sshfs", []string{"-o", "uid=42,gid=43,ro,allow_other", "--file-mode", "0444"}, 42, 43, 0o444, 0o500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := envMount(t, tt.args...)
			var st syscall.Stat_t
			if err := syscall.Stat(d.Path("env", "SFS_IT_THIRTY"), &st); err != nil {
				t.Fatal(err)
			}
			if st.Size != 30 || st.Mode != syscall.S_IFREG|tt.fileMode || st.Uid != tt.uid || st.Gid != tt.gid {
				t.Errorf("file: size %d mode %o owner %d:%d; want 30 %o %d:%d", st.Size, st.Mode, st.Uid, st.Gid, syscall.S_IFREG|tt.fileMode, tt.uid, tt.gid)
			}
			if err := syscall.Stat(d.Path("env", "SFS_IT_DB#user"), &st); err != nil || st.Size != 3 {
				t.Errorf("field st_size = %d, %v; want 3", st.Size, err)
			}
			for _, dir := range []string{d.Dir, d.Path("env")} {
				if err := syscall.Stat(dir, &st); err != nil {
					t.Fatal(err)
				}
				if st.Mode != syscall.S_IFDIR|tt.dirMode || st.Uid != tt.uid || st.Gid != tt.gid {
					t.Errorf("%s: mode %o owner %d:%d; want %o %d:%d", dir, st.Mode, st.Uid, st.Gid, syscall.S_IFDIR|tt.dirMode, tt.uid, tt.gid)
				}
			}
		})
	}
}

func TestAllowOtherImpliesDefaultPermissions(t *testing.T) {
	d := envMount(t, "--allow-other")
	data, _ := os.ReadFile("/proc/mounts")
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == d.Dir {
			if !strings.Contains(f[3], "allow_other") || !strings.Contains(f[3], "default_permissions") || !strings.HasPrefix(f[3], "ro") {
				t.Errorf("mount options %q: want ro, allow_other and default_permissions", f[3])
			}
			return
		}
	}
	t.Fatal("mount not found in /proc/mounts")
}

func TestConcurrentReaders(t *testing.T) {
	d := envMount(t)
	files := map[string]string{
		d.Path("env", "SFS_IT_API_KEY"):     "hunter2-api-key",
		d.Path("env", "SFS_IT_DB#password"): "p@ss w0rd",
		d.Path("env", "SFS_IT_THIRTY"):      "012345678901234567890123456789",
	}
	paths := slices.Sorted(func(yield func(string) bool) {
		for p := range files {
			if !yield(p) {
				return
			}
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Go(func() {
			for i := range 1000 {
				p := paths[(g+i)%len(paths)]
				got, err := os.ReadFile(p)
				if err != nil || string(got) != files[p] {
					errs <- fmt.Errorf("reader %d read %d of %s: %q, %v", g, i, p, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNoSecretInLogs(t *testing.T) {
	var audit = filepath.Join(t.TempDir(), "audit.jsonl")
	d := envMount(t, "--audit-log", audit)
	for _, p := range []string{"SFS_IT_API_KEY", "SFS_IT_DB#password", "SFS_IT_THIRTY", "MISSING"} {
		os.ReadFile(d.Path("env", p))
	}
	readDir(t, d.Path("env"))
	d.stop()
	logs := d.Stderr()
	auditData, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"hunter2-api-key", "p@ss w0rd", "012345678901234567890123456789", "never-shown-token"} {
		if strings.Contains(logs, v) || bytes.Contains(auditData, []byte(v)) {
			t.Errorf("a secret value (%q) reached the log or the audit trail", v)
		}
	}
	for _, want := range []string{`"ref":"env:SFS_IT_API_KEY"`, `"ref":"env:SFS_IT_DB#password"`, `"result":"ok"`, `"uid":`, `"pid":`,
		`"op":"lookup","ref":"env:MISSING"`, `"result":"no such file or directory"`} {
		if !bytes.Contains(auditData, []byte(want)) {
			t.Errorf("audit trail lacks %s:\n%s", want, auditData)
		}
	}
}

func TestMmap(t *testing.T) {
	d := envMount(t)
	f, err := os.Open(d.Path("env", "SFS_IT_API_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, len("hunter2-api-key"), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap of a secret: %v", err)
	}
	defer syscall.Munmap(m)
	if string(m) != "hunter2-api-key" {
		t.Errorf("mmap read %q", m)
	}
}
