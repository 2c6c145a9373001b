package control

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeHandler struct{ refreshed []string }

func (f *fakeHandler) Status() Status {
	return Status{Version: "v1", Mode: "fast", Started: time.Now(), Providers: []ProviderStatus{{Name: "aws", Up: false, LastError: "unavailable"}}}
}

func (f *fakeHandler) Refresh(ctx context.Context, refs []string) error {
	f.refreshed = append(f.refreshed, refs...)
	if len(refs) > 0 && refs[0] == "bad:" {
		return errors.New("bad reference")
	}
	return nil
}

func TestDirAndName(t *testing.T) {
	if d, err := Dir(0, ""); err != nil || d != "/run/secretfs" {
		t.Errorf("root: %q, %v", d, err)
	}
	if d, err := Dir(1000, "/run/user/1000"); err != nil || d != "/run/user/1000/secretfs" {
		t.Errorf("a user: %q, %v", d, err)
	}
	if _, err := Dir(1000, ""); err == nil {
		t.Error("a user without XDG_RUNTIME_DIR: no error, want one (the mount then runs without a socket)")
	}
	a, b := Name("/mnt/secrets"), Name("/mnt-secrets")
	if a == b || !strings.HasPrefix(a, "mnt-secrets-") || !strings.HasSuffix(a, ".sock") {
		t.Errorf("names %q and %q: want readable, distinct", a, b)
	}
	if long := Name("/" + strings.Repeat("x", 300)); len(long) > 64 {
		t.Errorf("a long mountpoint's name is %d bytes; a socket path must stay short", len(long))
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", dir)
	mnt := filepath.Join(dir, "mnt")
	path, err := Path(mnt)
	if err != nil {
		t.Skipf("as root the socket goes to /run/secretfs: %v", err)
	}
	h := &fakeHandler{}
	s, err := Listen(path, h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Listen(path, h, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a second daemon on the same socket: no error")
	}
	st, err := GetStatus(mnt)
	if err != nil || st.Version != "v1" || len(st.Providers) != 1 || st.Providers[0].LastError != "unavailable" {
		t.Errorf("GetStatus = %+v, %v", st, err)
	}
	if err := Refresh(mnt, []string{"aws:x", "aws:dir/"}); err != nil || strings.Join(h.refreshed, " ") != "aws:x aws:dir/" {
		t.Errorf("Refresh: %v, refreshed %q", err, h.refreshed)
	}
	if err := Refresh(mnt, []string{"bad:"}); err == nil || !strings.Contains(err.Error(), "bad reference") {
		t.Errorf("a failed refresh = %v, want its error", err)
	}
	if _, err := GetStatus(filepath.Join(dir, "elsewhere")); !errors.Is(err, ErrNotMounted) {
		t.Errorf("no mount: %v, want ErrNotMounted", err)
	}
}

func TestResolve(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"x", "y/sub", "y/mnt", "x/mnt"} {
		os.MkdirAll(filepath.Join(base, d), 0o755)
	}
	os.Symlink(filepath.Join(base, "y/sub"), filepath.Join(base, "x/link"))
	os.Symlink("sub", filepath.Join(base, "y/rel"))
	for _, tt := range []struct{ in, want string }{
		{"x/mnt", "x/mnt"},
		{"x/link", "y/sub"},
		{"y/rel", "y/sub"},
		{"x/link/../mnt", "y/mnt"}, // ".." after the link, as the kernel walks it
		{"x/missing", "x/missing"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Resolve(base + "/" + tt.in) // not joined: Join would clean ".." away
			if want := filepath.Join(base, tt.want); err != nil || got != want {
				t.Errorf("Resolve(%s) = %q, %v; want %q", tt.in, got, err, want)
			}
		})
	}
}
