package integration

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// The account of the scale tests: 20 directories of 100 secrets, four
// levels deep (scale/dNN/x/sNNN), a secret that is also a directory
// (scale/d03), and others around them.
func scaleName(d, s int) string { return fmt.Sprintf("scale/d%02d/x/s%03d", d, s) }

func seedScale(k *kumo, dirs, others int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := k.Client()
	names := make(chan string)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for n := range names {
				if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("value-" + n)}); err != nil {
					select {
					case errs <- fmt.Errorf("CreateSecret %s: %w", n, err):
					default:
					}
				}
			}
		})
	}
	for d := range dirs {
		for s := range 100 {
			names <- scaleName(d, s)
		}
	}
	for i := range others {
		names <- fmt.Sprintf("other/o%05d", i)
	}
	names <- "scale/d03"
	close(names)
	wg.Wait()
	close(errs)
	return <-errs
}

var sharedScale sharedBackend[*kumo]

// scaleFixture is an emulator holding 2,130 secrets.
func scaleFixture(t testing.TB) *kumo {
	t.Helper()
	bin := backendBin(t, "SECRETFS_KUMO_BIN")
	return sharedScale.get(t, func() (*kumo, error) {
		k, err := launchKumo(bin, 0)
		if err != nil {
			return nil, err
		}
		atExit(k.Stop)
		return k, seedScale(k, 20, 129)
	})
}

// calls counts a daemon's API calls by operation, after its log caught up.
func calls(t *testing.T, d *daemon) map[string]int {
	t.Helper()
	d.syncLog(t, "aws")
	// The SDK's line of the marker's own call may come after the cache's:
	// wait for it, so that it is not counted as a later call.
	d.mu.Lock()
	syncs := d.syncs
	d.mu.Unlock()
	waitFor(2*time.Second, func() bool { return apiCalls(d, "GetSecretValue") >= syncs })
	out := map[string]int{}
	for _, op := range []string{"GetSecretValue", "ListSecrets", "BatchGetSecretValue"} {
		out[op] = apiCalls(d, op)
	}
	d.mu.Lock()
	out["GetSecretValue"] -= d.syncs // the sync markers' own reads
	d.mu.Unlock()
	return out
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestAWSScaleReadsCostAFewCalls(t *testing.T) {
	t.Parallel()
	k := scaleFixture(t)
	d := awsMount(t, k)
	if got, err := os.ReadFile(d.Path("aws", scaleName(7, 50))); err != nil || string(got) != "value-"+scaleName(7, 50) {
		t.Fatalf("first deep read: %q, %v", got, err)
	}
	first := calls(t, d)
	t.Logf("first read four levels deep in 2,130 secrets: %v", first)
	if total(first) > 8 {
		t.Errorf("first read four levels deep made %d API calls (%v), want at most 8", total(first), first)
	}
	if got, err := os.ReadFile(d.Path("aws", scaleName(7, 51))); err != nil || string(got) != "value-"+scaleName(7, 51) {
		t.Fatalf("second read: %q, %v", got, err)
	}
	second := calls(t, d)
	if n := total(second) - total(first); n > 1 {
		t.Errorf("a second read in the same directory made %d API calls, want at most 1", n)
	}
	_, err := os.ReadFile(d.Path("aws", "scale", "d07", "x", "nope"))
	wantErrno(t, "a missing name", err, syscall.ENOENT)
}

func TestAWSScaleListingAndBatches(t *testing.T) {
	t.Parallel()
	k := scaleFixture(t)
	d := awsMount(t, k)
	dir := d.Path("aws", "scale", "d11", "x")
	names := readDir(t, dir)
	if len(names) != 100 {
		t.Fatalf("ls of a 100-secret directory: %d names", len(names))
	}
	ls := calls(t, d)
	t.Logf("ls of a 100-secret directory in 2,130 secrets: %v", ls)
	// The three probes of the path, and the one page of the directory
	// (a complete probe, reused): never the 22 pages of the account.
	if ls["ListSecrets"] > 4 {
		t.Errorf("ls made %d ListSecrets calls, want the directory's page and the path's probes (at most 4)", ls["ListSecrets"])
	}
	if ls["BatchGetSecretValue"] != 5 || ls["GetSecretValue"] != 0 {
		t.Errorf("ls read ahead with %d BatchGetSecretValue and %d GetSecretValue calls, want 5 batches of 20 and no single reads", ls["BatchGetSecretValue"], ls["GetSecretValue"])
	}
	for _, n := range names {
		if got, err := os.ReadFile(filepath.Join(dir, n)); err != nil || !strings.HasPrefix(string(got), "value-scale/d11/x/") {
			t.Fatalf("%s: %q, %v", n, got, err)
		}
	}
	after := calls(t, d)
	if n := after["GetSecretValue"] - ls["GetSecretValue"]; n != 0 {
		t.Errorf("reading the 100 files after ls made %d GetSecretValue calls, want 0 (the batch)", n)
	}
}

func TestAWSScaleCollisionRule(t *testing.T) {
	t.Parallel()
	k := scaleFixture(t)
	d := awsMount(t, k)
	if st, err := os.Stat(d.Path("aws", "scale", "d03")); err != nil || !st.IsDir() {
		t.Errorf("scale/d03 is a secret and a directory: stat = %v, %v; want the directory", st, err)
	}
	if got, err := os.ReadFile(d.Path("aws", "scale", "d03@")); err != nil || string(got) != "value-scale/d03" {
		t.Errorf("cat scale/d03@ = %q, %v; want the secret", got, err)
	}
	if got, err := os.ReadFile(d.Path("aws", scaleName(3, 1))); err != nil || string(got) != "value-"+scaleName(3, 1) {
		t.Errorf("below the collision: %q, %v", got, err)
	}
	names := readDir(t, d.Path("aws", "scale"))
	if !slices.Contains(names, "d03") || !slices.Contains(names, "d03@") || len(names) != 21 {
		t.Errorf("ls scale = %q, want d00..d19 and d03@", names)
	}
}

func TestAWSThrottlingServesStale(t *testing.T) {
	t.Parallel()
	flag := filepath.Join(t.TempDir(), "throttle")
	k := startKumo(t, 0, "KUMO_SECRETFS_THROTTLE_FILE="+flag)
	defer k.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := k.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String("busy/a/b/key"), SecretString: aws.String("cached")}); err != nil {
		t.Fatal(err)
	}
	d := awsMount(t, k, "--ttl", "300ms", "--max-stale", "1h", "--timeout", "3s")
	p := d.Path("aws", "busy", "a", "b", "key")
	if got, err := os.ReadFile(p); err != nil || string(got) != "cached" {
		t.Fatalf("warm-up: %q, %v", got, err)
	}
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // past the TTL and the kernel's entries
	for i := range 3 {
		start := time.Now()
		if got, err := os.ReadFile(p); err != nil || string(got) != "cached" {
			t.Fatalf("read %d while throttled: %q, %v; want the cached value", i, got, err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("read %d while throttled took %v, want under 1s", i, el)
		}
	}
	_, err := os.ReadFile(d.Path("aws", "busy", "a", "b", "never-read"))
	wantErrno(t, "uncached while throttled", err, syscall.EIO)
	d.waitLog(t, "ThrottlingException", "the throttling was not logged")
	if _, _, code := secretfs(t, k.Env(t), "get", "--providers", "aws", "aws:busy/a/b/key"); code != 6 {
		t.Errorf("get while throttled: exit %d, want 6 (unavailable)", code)
	}
	os.Remove(flag)
	if _, err := k.Client().PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String("busy/a/b/key"), SecretString: aws.String("after")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "reads recover when the throttling ends", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && string(got) == "after"
	})
}

// walkAll reads every file below dir, and returns how many.
func walkAll(t testing.TB, dir string, read bool) int {
	n := 0
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			n++
			if read {
				if _, err := os.ReadFile(path); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
