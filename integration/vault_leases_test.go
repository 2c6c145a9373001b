package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// postgres is a PostgreSQL server started for one test, as an unprivileged
// user, on a loopback port, with password (SCRAM) logins over TCP.
type postgres struct {
	port     int
	password string // the superuser's ("postgres")
}

// nobody is the unprivileged user PostgreSQL runs as (initdb refuses root).
const nobody = 65534

func startPostgres(t *testing.T) *postgres {
	t.Helper()
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		if _, serr := os.Stat("/usr/lib/postgresql/15/bin/initdb"); serr != nil {
			t.Skip("PostgreSQL 15 is not installed (make test installs Debian's postgresql)")
		}
		initdb = "/usr/lib/postgresql/15/bin/initdb"
	}
	bin := filepath.Dir(initdb)
	if r, err := filepath.EvalSymlinks(initdb); err == nil {
		bin = filepath.Dir(r)
	}
	dir, err := os.MkdirTemp("", "secretfs-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pg := &postgres{password: "superuser-pw"}
	if pg.port, err = portOr(0); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(pg.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(pw, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	as := func(args ...string) *exec.Cmd {
		cmd := exec.Command("setpriv", append([]string{"--reuid", fmt.Sprint(nobody), "--regid", fmt.Sprint(nobody), "--clear-groups", "--"}, args...)...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := as(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth-local=trust",
		"--auth-host=scram-sha-256", "--pwfile", pw).CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", pg.port, dir)
	if out, err := as(filepath.Join(bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "30", "start").CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := as(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
			t.Errorf("pg_ctl stop: %v\n%s", err, out)
		}
	})
	return pg
}

// login reports whether user can log in with password over TCP.
func (pg *postgres) login(user, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-h", "127.0.0.1", "-p", fmt.Sprint(pg.port), "-U", user, "-d", "postgres", "-w", "-tAc", "select 1")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PGPASSWORD=" + password, "PGCONNECT_TIMEOUT=5"}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		return fmt.Errorf("psql as %s: %v: %s", user, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Vault's database engine with its built-in PostgreSQL plugin, through
// the mount: the credentials log in, are renewed without changing, are
// replaced ahead of the lease's maximum (the old ones still log in until
// their end), and while Vault is down are served until their lease ends,
// then EIO.
func TestVaultDatabaseLeases(t *testing.T) {
	t.Parallel()
	pg, v := vaultDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := v.Client()
	d := vaultMount(t, v, "root", "--ttl", "1s", "--timeout", "3s", "--max-stale", "1h")
	read := func(field string) (string, error) {
		b, err := os.ReadFile(d.Path("vault/database/creds/app#" + field))
		return string(b), err
	}
	start := time.Now()
	user, err := read("username")
	if err != nil {
		t.Fatal(err)
	}
	password, err := read("password")
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.login(user, password); err != nil {
		t.Fatalf("the credentials through the mount: %v", err)
	}
	if err := pg.login(user, password+"x"); err == nil {
		t.Fatal("a wrong password logged in: the server does not check passwords")
	}
	leases := func() []string {
		s, err := c.Logical().ListWithContext(ctx, "sys/leases/lookup/database/creds/app/")
		if err != nil || s == nil {
			return nil
		}
		var ids []string
		for _, k := range s.Data["keys"].([]any) {
			ids = append(ids, "database/creds/app/"+k.(string))
		}
		return ids
	}
	if ids := leases(); len(ids) != 1 {
		t.Fatalf("leases after reading two fields: got %d, want 1", len(ids))
	}
	expiry := func(id string) time.Time {
		s, err := c.Logical().WriteWithContext(ctx, "sys/leases/lookup", map[string]any{"lease_id": id})
		if err != nil {
			t.Fatal(err)
		}
		at, _ := time.Parse(time.RFC3339Nano, s.Data["expire_time"].(string))
		return at
	}
	id := leases()[0]
	first := expiry(id)
	// Renewed at about two thirds of the 6s term, while the file is read.
	renewed := false
	for time.Since(start) < 9*time.Second {
		if u, err := read("username"); err != nil || u != user {
			t.Fatalf("while renewing: got %q, %v, want %q (one issuance)", u, err, user)
		}
		if expiry(id).After(first.Add(time.Second)) {
			renewed = true
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !renewed {
		t.Fatalf("the lease was not renewed within 9s (expires %s)", first)
	}
	if err := pg.login(user, password); err != nil {
		t.Fatalf("after a renewal: %v", err)
	}
	// At the 15s maximum, a new one is issued ahead of the end; the old
	// one still logs in until its lease ends.
	var user2, password2 string
	eventually(t, 20*time.Second, "new credentials ahead of the lease's maximum", func() bool {
		u, err := read("username")
		if err != nil || u == user {
			return false
		}
		user2 = u
		password2, err = read("password")
		return err == nil
	})
	replacedAfter := time.Since(start)
	if err := pg.login(user2, password2); err != nil {
		t.Fatalf("the new credentials: %v", err)
	}
	if time.Since(start) < 14*time.Second {
		if err := pg.login(user, password); err != nil {
			t.Errorf("the old credentials before their lease ended (%s after issue): %v", time.Since(start), err)
		}
	}
	t.Logf("replaced %s after the first issue (max_ttl 15s)", replacedAfter.Round(100*time.Millisecond))
	if n := len(leases()); n > 2 {
		t.Errorf("leases: got %d, want at most 2 (the old one and the new)", n)
	}
	// Outage: served until the lease ends, then EIO.
	v.Stop()
	if u, err := read("username"); err != nil || u != user2 {
		t.Fatalf("Vault down, within the lease: got %q, %v, want %q", u, err, user2)
	}
	eventually(t, 20*time.Second, "EIO once the lease ended", func() bool {
		_, err := read("username")
		return errors.Is(err, syscall.EIO)
	})
}

// vaultDatabase starts PostgreSQL and a Vault whose database engine makes
// its users: role "app", leases of 6s renewable up to 15s.
func vaultDatabase(t *testing.T) (*postgres, *vaultServer) {
	t.Helper()
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql is not installed (make test installs Debian's postgresql)")
	}
	pg := startPostgres(t)
	v := startVault(t, 0)
	t.Cleanup(v.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := v.Client()
	if err := c.Sys().MountWithContext(ctx, "database", &api.MountInput{Type: "database"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "database/config/pg", map[string]any{
		"plugin_name":    "postgresql-database-plugin",
		"connection_url": fmt.Sprintf("postgresql://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", pg.port),
		"username":       "postgres", "password": pg.password, "allowed_roles": "app",
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "database/roles/app", map[string]any{
		"db_name":             "pg",
		"creation_statements": `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
		"default_ttl":         "6s", "max_ttl": "15s",
	}); err != nil {
		t.Fatal(err)
	}
	return pg, v
}

// --vault-revoke-on-exit: a clean stop revokes the leases the mount took,
// and the credentials stop logging in.
func TestVaultRevokeOnExit(t *testing.T) {
	t.Parallel()
	pg, v := vaultDatabase(t)
	d := vaultMount(t, v, "root", "--vault-revoke-on-exit")
	user, err := os.ReadFile(d.Path("vault/database/creds/app#username"))
	if err != nil {
		t.Fatal(err)
	}
	password, err := os.ReadFile(d.Path("vault/database/creds/app#password"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.login(string(user), string(password)); err != nil {
		t.Fatalf("before the stop: %v", err)
	}
	d.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s, err := v.Client().Logical().ListWithContext(ctx, "sys/leases/lookup/database/creds/app/"); err != nil || s != nil && len(s.Data["keys"].([]any)) > 0 {
		t.Fatalf("leases after a clean stop: %v, %v; want none", s, err)
	}
	if err := pg.login(string(user), string(password)); err == nil {
		t.Fatal("the credentials still log in after their lease was revoked")
	}
}
