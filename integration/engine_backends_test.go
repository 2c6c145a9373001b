package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/hashicorp/vault/api"
)

// realBackend is a backend as the engine tests drive it: a secret is
// written, rotated and deleted through the backend's own API (for the test
// provider, its files) and read through a mount.
type realBackend struct {
	name   string
	mount  func(t *testing.T, args ...string) *daemon
	file   func(key string) string // the path below the mount
	ref    func(key string) string // the cache's name for its backend calls
	write  func(t *testing.T, key, value string)
	remove func(t *testing.T, key string)
}

func realBackends(t *testing.T) []realBackend {
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		return c
	}
	k := awsFixture(t)
	v := vaultShared(t)
	g := startGCP(t)
	az := startAzure(t)
	dashed := strings.NewReplacer("/", "-", "_", "-").Replace                    // Key Vault names hold letters, digits and "-"
	flat := func(key string) string { return strings.ReplaceAll(key, "/", "_") } // Secret Manager ids hold no "/"
	dir := t.TempDir()                                                           // the test provider's files
	files := func(t *testing.T) *testBackend { return &testBackend{t: t, Dir: dir} }
	return []realBackend{
		{
			name:  "test",
			mount: func(t *testing.T, args ...string) *daemon { return testMount(t, files(t), args...) },
			file:  func(key string) string { return "test/" + key },
			ref:   func(key string) string { return "test:" + key },
			write: func(t *testing.T, key, value string) { files(t).write(key, value) },
			remove: func(t *testing.T, key string) {
				if err := os.Remove(filepath.Join(dir, filepath.FromSlash(key))); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:  "aws",
			mount: func(t *testing.T, args ...string) *daemon { return awsMount(t, k, args...) },
			file:  func(key string) string { return "aws/" + key },
			ref:   func(key string) string { return "aws:" + key },
			write: func(t *testing.T, key, value string) {
				_, err := k.Client().PutSecretValue(ctx(), &sm.PutSecretValueInput{SecretId: aws.String(key), SecretString: aws.String(value)})
				if err != nil && strings.Contains(err.Error(), "ResourceNotFound") {
					_, err = k.Client().CreateSecret(ctx(), &sm.CreateSecretInput{Name: aws.String(key), SecretString: aws.String(value)})
				}
				if err != nil {
					t.Fatal(err)
				}
			},
			remove: func(t *testing.T, key string) {
				if _, err := k.Client().DeleteSecret(ctx(), &sm.DeleteSecretInput{SecretId: aws.String(key), ForceDeleteWithoutRecovery: aws.Bool(true)}); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:   "gcp",
			mount:  func(t *testing.T, args ...string) *daemon { return gcpMount(t, g, args...) },
			file:   func(key string) string { return "gcp/" + flat(key) },
			ref:    func(key string) string { return "gcp:" + flat(key) },
			write:  func(t *testing.T, key, value string) { g.Put(flat(key), []byte(value)) },
			remove: func(t *testing.T, key string) { g.Delete(flat(key)) },
		},
		{
			name:   "azure",
			mount:  func(t *testing.T, args ...string) *daemon { return azureMount(t, az, args...) },
			file:   func(key string) string { return "azure/" + dashed(key) },
			ref:    func(key string) string { return "azure:" + dashed(key) },
			write:  func(t *testing.T, key, value string) { az.Put(dashed(key), value) },
			remove: func(t *testing.T, key string) { az.Delete(dashed(key)) },
		},
		{
			name:  "vault",
			mount: func(t *testing.T, args ...string) *daemon { return vaultMount(t, v, "root", args...) },
			file:  func(key string) string { return "vault/secret/" + key + "#v" },
			ref:   func(key string) string { return "vault:secret/" + key },
			write: func(t *testing.T, key, value string) {
				if _, err := v.Client().Logical().WriteWithContext(ctx(), "secret/data/"+key, map[string]any{"data": map[string]any{"v": value}}); err != nil {
					t.Fatal(err)
				}
			},
			remove: func(t *testing.T, key string) {
				if _, err := v.Client().Logical().DeleteWithContext(ctx(), "secret/metadata/"+key); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
}

// keyFor makes a key of its own for each test and backend, four levels deep.
func keyFor(t *testing.T, b realBackend) string {
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	return "engine/" + name + "/x/key"
}

func TestBackendRotationIsNeverTornAndHeldDescriptorsKeepTheOldValue(t *testing.T) {
	t.Parallel()
	versions := []string{version('a', 3000), version('b', 5000), version('c', 700)}
	for _, b := range realBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			key := keyFor(t, b)
			b.write(t, key, versions[0])
			d := b.mount(t, "--ttl", "300ms")
			p := d.Path(b.file(key))
			held, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			first := make([]byte, 1)
			if _, err := held.Read(first); err != nil {
				t.Fatal(err)
			}

			var stop atomic.Bool
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for range 3 {
				wg.Go(func() {
					for !stop.Load() {
						got, err := readBytewise(p)
						if err != nil {
							errs <- err
							return
						}
						if !slices.Contains(versions, string(got)) {
							errs <- fmt.Errorf("read %d bytes starting %q: not one whole version", len(got), got[:min(len(got), 8)])
							return
						}
					}
				})
			}
			for i := 1; i <= 3; i++ {
				next := versions[i%len(versions)]
				b.write(t, key, next)
				eventually(t, 1300*time.Millisecond, fmt.Sprintf("rotation %d is read within TTL + 1s", i), func() bool {
					got, err := os.ReadFile(p)
					return err == nil && string(got) == next
				})
				var st syscall.Stat_t
				if err := syscall.Stat(p, &st); err != nil || st.Size != int64(len(next)) {
					t.Errorf("st_size after rotation %d = %d, %v; want %d", i, st.Size, err, len(next))
				}
			}
			stop.Store(true)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			rest, err := readRest(held)
			if got := string(first) + string(rest); err != nil || got != versions[0] {
				t.Errorf("descriptor held across 3 rotations read %d bytes, %v; want the first value whole", len(got), err)
			}
		})
	}
}

func TestBackendDeletion(t *testing.T) {
	t.Parallel()
	for _, b := range realBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			key := keyFor(t, b)
			b.write(t, key, "short-lived")
			d := b.mount(t, "--ttl", "300ms", "--negative-ttl", "300ms")
			p := d.Path(b.file(key))
			if got, err := os.ReadFile(p); err != nil || string(got) != "short-lived" {
				t.Fatalf("before: %q, %v", got, err)
			}
			b.remove(t, key)
			eventually(t, 1600*time.Millisecond, "ENOENT within TTL + negative TTL + 1s", func() bool {
				_, err := os.ReadFile(p)
				return os.IsNotExist(err)
			})
		})
	}
}

func TestBackendRefreshAhead(t *testing.T) {
	t.Parallel()
	for _, b := range realBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			hot, idle := keyFor(t, b)+"-hot", keyFor(t, b)+"-idle"
			b.write(t, hot, "h")
			b.write(t, idle, "i")
			d := b.mount(t, "--ttl", "1s")
			os.ReadFile(d.Path(b.file(idle)))
			const span = 4 * time.Second
			for start := time.Now(); time.Since(start) < span; time.Sleep(25 * time.Millisecond) {
				if got, err := os.ReadFile(d.Path(b.file(hot))); err != nil || string(got) != "h" {
					t.Fatalf("hot read = %q, %v", got, err)
				}
			}
			d.syncLog(t, b.name)
			h, i := backendCalls(d, b.ref(hot)), backendCalls(d, b.ref(idle))
			t.Logf("over %v with a 1s TTL: hot key %d calls, idle key %d", span, h, i)
			if h < 3 || h > 8 {
				t.Errorf("hot key: %d backend calls over %v, want about one per TTL", h, span)
			}
			if i != 1 {
				t.Errorf("idle key: %d backend calls, want 1", i)
			}
		})
	}
}

// An outage found by one read: every cached path of that backend, however
// deep, is then served at once.
func TestAWSOutageServesDeepPathsAtOnce(t *testing.T) {
	t.Parallel()
	k := kumoWith(t, map[string]string{"svc/a/b/c/key": "cached svc/a/b/c/key", "svc/a/b/c/other": "cached svc/a/b/c/other"})
	d := awsMount(t, k, "--ttl", "300ms", "--max-stale", "1h", "--timeout", "3s")
	deepOutage(t, d, k.Stop, "aws/svc/a/b/c/key", "aws/svc/a/b/c/other", "cached svc/a/b/c/key", "cached svc/a/b/c/other")
}

func TestGCPOutageServesPathsAtOnce(t *testing.T) {
	t.Parallel()
	g := startGCP(t)
	g.Put("svc_key", []byte("cached svc_key"))
	g.Put("svc_other", []byte("cached svc_other"))
	d := gcpMount(t, g, "--ttl", "300ms", "--max-stale", "1h", "--timeout", "3s")
	deepOutage(t, d, g.Stop, "gcp/svc_key", "gcp/svc_other", "cached svc_key", "cached svc_other")
}

func TestVaultOutageServesDeepPathsAtOnce(t *testing.T) {
	t.Parallel()
	v := startVault(t, 0)
	defer v.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, name := range []string{"bars/nested/deep", "bars/nested/other"} {
		if _, err := v.Client().Logical().WriteWithContext(ctx, "secret/data/"+name, map[string]any{"data": map[string]any{"k": "cached " + name}}); err != nil {
			t.Fatal(err)
		}
	}
	d := vaultMount(t, v, "root", "--ttl", "300ms", "--max-stale", "1h", "--timeout", "3s")
	deepOutage(t, d, v.Stop, "vault/secret/bars/nested/deep#k", "vault/secret/bars/nested/other#k", "cached bars/nested/deep", "cached bars/nested/other")
}

func deepOutage(t *testing.T, d *daemon, stop func(), path, other, want, wantOther string) {
	t.Helper()
	for p, w := range map[string]string{path: want, other: wantOther} {
		if got, err := os.ReadFile(d.Path(p)); err != nil || string(got) != w {
			t.Fatalf("warm-up %s: %q, %v", p, got, err)
		}
	}
	stop()
	time.Sleep(1200 * time.Millisecond) // past the TTL and the kernel's directory entries
	for i, p := range []string{path, other, path} {
		w := map[string]string{path: want, other: wantOther}[p]
		start := time.Now()
		got, err := os.ReadFile(d.Path(p))
		if err != nil || string(got) != w {
			t.Fatalf("read %d while down: %q, %v; want the cached value", i, got, err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("read %d of a cached path 4 directories deep took %v during an outage, want under 1s", i, el)
		}
	}
	d.waitLog(t, "provider unavailable", "the outage was not logged")
}

// A token that stops working says nothing about the secrets: the cached
// values are served stale, never EACCES.
func TestVaultRevokedTokenKeepsServingStale(t *testing.T) {
	t.Parallel()
	v := vaultShared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := v.Client().Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"root"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Client().Logical().WriteWithContext(ctx, "secret/data/engine/revoked", map[string]any{"data": map[string]any{"v": "still served"}}); err != nil {
		t.Fatal(err)
	}
	d := vaultMount(t, v, tok.Auth.ClientToken, "--ttl", "300ms", "--max-stale", "1h")
	p := d.Path("vault/secret/engine/revoked#v")
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Client().Auth().Token().RevokeTreeWithContext(ctx, tok.Auth.ClientToken); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	for range 3 {
		got, err := os.ReadFile(p)
		if err != nil || string(got) != string(want) {
			t.Fatalf("after the token was revoked: %q, %v; want the stale value %q", got, err, want)
		}
	}
	d.waitLog(t, "no longer valid", "the dead token was not logged")
}
