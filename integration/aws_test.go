package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

func TestAWSValues(t *testing.T) {
	k := awsFixture(t)
	d := awsMount(t, k)
	tests := []struct {
		path string
		want []byte
	}{
		{"aws/json/rds", []byte(awsJSON)},
		{"aws/json/rds#username", []byte("admin")},
		{"aws/json/rds#password", []byte("pa$$ w0rd")},
		{"aws/json/rds#port", []byte("5432")},
		{"aws/json/rds#tags", []byte(`["a","b"]`)},
		{"aws/bin/allbytes", awsBinary},
		{"aws/user@example.com", []byte("at-sign-secret")},
		{"aws/rot/one", []byte(awsRotNew)},
		{"aws/rot/one@AWSCURRENT", []byte(awsRotNew)},
		{"aws/rot/one@AWSPREVIOUS", []byte(awsRotOld)},
		{"aws/rot/one@" + awsVersions["rot/one"], []byte(awsRotOld)},
		{"aws/app@", []byte("app-itself")},
		{"aws/app/db", []byte("app-db")},
		{"aws/gone/kept", []byte("kept")},
		{"aws/" + bulkName(3, 17), []byte("value-" + bulkName(3, 17))},
	}
	for _, tt := range tests {
		got, err := os.ReadFile(d.Path(tt.path))
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("cat %s = %q, %v; want %q", tt.path, got, err, tt.want)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(d.Path(tt.path), &st); err != nil || st.Size != int64(len(tt.want)) {
			t.Errorf("stat %s: size %d, %v; want %d", tt.path, st.Size, err, len(tt.want))
		}
	}
	// mtime is the version's CreatedDate.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := k.Client().GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String("rot/one"), VersionStage: aws.String("AWSPREVIOUS")})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(d.Path("aws/rot/one@AWSPREVIOUS")); err != nil || !st.ModTime().Equal(out.CreatedDate.Truncate(time.Second)) && !st.ModTime().Equal(*out.CreatedDate) {
		t.Errorf("mtime = %v, %v; want CreatedDate %v", st.ModTime(), err, out.CreatedDate)
	}
	for _, p := range []string{"aws/nope", "aws/gone/deleted", "aws/json/rds#missing", "aws/bin/allbytes#f",
		"aws/rot/one@NOSUCHSTAGE", "aws/rot/one@01234567-89ab-cdef-0123-456789abcdef", "aws/bulk/team9/svc00"} {
		_, err := os.ReadFile(d.Path(p))
		wantErrno(t, p, err, syscall.ENOENT)
	}
}

func TestAWSGetCommand(t *testing.T) {
	k := awsFixture(t)
	env := k.Env(t)
	tests := []struct {
		ref      string
		want     []byte
		wantCode int
	}{
		{"aws:bin/allbytes", awsBinary, 0},
		{"aws:json/rds#password", []byte("pa$$ w0rd"), 0},
		{"aws:rot/one@AWSPREVIOUS", []byte(awsRotOld), 0},
		{"aws:rot/one@" + awsVersions["rot/one"], []byte(awsRotOld), 0},
		{"aws:user@example.com", []byte("at-sign-secret"), 0},
		{"aws:gone/deleted", nil, 3},
		{"aws:nope", nil, 3},
	}
	for _, tt := range tests {
		out, stderr, code := secretfs(t, env, "get", "--providers", "aws", tt.ref)
		if code != tt.wantCode || !bytes.Equal([]byte(out), tt.want) {
			t.Errorf("get %s = %q, exit %d; want %q, %d (stderr %q)", tt.ref, out, code, tt.want, tt.wantCode, stderr)
		}
	}
	out, _, code := secretfs(t, env, "ls", "--providers", "aws", "aws:bulk/team2")
	if want := 30; code != 0 || len(splitLines(out)) != want {
		t.Errorf("ls aws:bulk/team2: %d lines, exit %d; want %d", len(splitLines(out)), code, want)
	}
}

func splitLines(s string) []string {
	var out []string
	for l := range bytes.Lines([]byte(s)) {
		out = append(out, string(bytes.TrimSuffix(l, []byte("\n"))))
	}
	return out
}

func TestAWSListings(t *testing.T) {
	k := awsFixture(t)
	d := awsMount(t, k)
	var svcs []string
	for i := range 30 {
		svcs = append(svcs, fmt.Sprintf("svc%02d", i))
	}
	tests := []struct {
		dir  string
		want []string
	}{
		{"aws", []string{"app", "app@", "bin", "bulk", "gone", "json", "rot", "rotate", "user@example.com"}},
		{"aws/bulk", []string{"team0", "team1", "team2", "team3", "team4"}},
		{"aws/bulk/team4", svcs},
		{"aws/gone", []string{"kept"}}, // the deleted one is not listed
		{"aws/app", []string{"db"}},
	}
	for _, tt := range tests {
		if got := readDir(t, d.Path(tt.dir)); !slices.Equal(got, tt.want) {
			t.Errorf("ls %s = %q, want %q", tt.dir, got, tt.want)
		}
	}
	// 150 secrets need more than one ListSecrets page (100 a page).
	if n := apiCalls(d, "ListSecrets"); n < 2 {
		t.Errorf("ListSecrets calls = %d; want pagination (at least 2)", n)
	}
}

func TestAWSDirectoryReadIsBatched(t *testing.T) {
	k := awsFixture(t)
	d := awsMount(t, k)
	readDir(t, d.Path("aws", "bulk", "team1"))
	if n := apiCalls(d, "GetSecretValue"); n != 0 {
		t.Errorf("opening a directory of 30 secrets made %d GetSecretValue calls, want 0", n)
	}
	// 30 secrets: two batches of at most 20.
	if n := apiCalls(d, "BatchGetSecretValue"); n != 2 {
		t.Errorf("BatchGetSecretValue calls = %d, want 2", n)
	}
	for i := range 30 {
		if got, err := os.ReadFile(d.Path("aws", bulkName(1, i))); err != nil || string(got) != "value-"+bulkName(1, i) {
			t.Fatalf("%s: %q, %v", bulkName(1, i), got, err)
		}
	}
	d.syncLog(t, "aws")
	if n := apiCalls(d, "GetSecretValue"); n != 1 { // the sync marker's own
		t.Errorf("GetSecretValue calls for 30 reads after the batch = %d, want none", n-1)
	}
}

func TestAWSWarmReadMakesNoAPICalls(t *testing.T) {
	k := awsFixture(t)
	d := awsMount(t, k)
	paths := []string{"aws/json/rds", "aws/json/rds#password", "aws/bin/allbytes", "aws/rot/one@AWSPREVIOUS", "aws/" + bulkName(0, 0)}
	for _, p := range paths {
		if _, err := os.ReadFile(d.Path(p)); err != nil {
			t.Fatal(err)
		}
	}
	before := apiCalls(d, "")
	for range 20 {
		for _, p := range paths {
			if _, err := os.ReadFile(d.Path(p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if after := apiCalls(d, ""); after != before {
		t.Errorf("warm re-reads made %d API calls, want 0", after-before)
	}
}

func TestAWSPrefixConfinement(t *testing.T) {
	k := awsFixture(t)
	d := awsMount(t, k, "--aws-prefix", "bulk/team1/", "--aws-prefix", "json/")
	if got, err := os.ReadFile(d.Path("aws", bulkName(1, 5))); err != nil || string(got) != "value-"+bulkName(1, 5) {
		t.Errorf("inside the prefix: %q, %v", got, err)
	}
	if got := readDir(t, d.Path("aws")); !slices.Equal(got, []string{"bulk", "json"}) {
		t.Errorf("ls aws = %q, want [bulk json]", got)
	}
	if got := readDir(t, d.Path("aws", "bulk")); !slices.Equal(got, []string{"team1"}) {
		t.Errorf("ls aws/bulk = %q, want [team1]", got)
	}
	before := apiCalls(d, "GetSecretValue")
	for _, p := range []string{"aws/app/db", "aws/rot/one", "aws/" + bulkName(2, 5), "aws/bin/allbytes"} {
		_, err := os.ReadFile(d.Path(p))
		wantErrno(t, p+" outside the prefixes", err, syscall.ENOENT)
	}
	if n := apiCalls(d, "GetSecretValue") - before; n != 0 {
		t.Errorf("names outside the prefixes made %d GetSecretValue calls, want 0", n)
	}
	_, _, code := secretfs(t, k.Env(t), "get", "--providers", "aws", "--aws-prefix", "json/", "aws:app")
	if code != 3 {
		t.Errorf("get outside --aws-prefix: exit %d, want 3", code)
	}
}

func TestAWSRotation(t *testing.T) {
	k := awsFixture(t)
	d := awsMount(t, k, "--ttl", "500ms")
	p := d.Path("aws", "rotate", "live")
	if got, err := os.ReadFile(p); err != nil || string(got) != "first" {
		t.Fatalf("before rotation: %q, %v", got, err)
	}
	next := "second, and longer than the first"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := k.Client().PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String("rotate/live"), SecretString: aws.String(next)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the rotated value is read", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && string(got) == next
	})
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil || st.Size != int64(len(next)) {
		t.Errorf("size after rotation %d, %v; want %d", st.Size, err, len(next))
	}
}

func TestAWSEmulatorDown(t *testing.T) {
	k := startKumo(t, 0)
	defer k.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := k.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String("svc/key"), SecretString: aws.String("cached")}); err != nil {
		t.Fatal(err)
	}
	d := awsMount(t, k, "--ttl", "300ms", "--max-stale", "1h", "--timeout", "3s")
	p := d.Path("aws", "svc", "key")
	if got, err := os.ReadFile(p); err != nil || string(got) != "cached" {
		t.Fatalf("warm-up: %q, %v", got, err)
	}
	k.Stop()
	time.Sleep(600 * time.Millisecond) // past the TTL
	for range 3 {
		start := time.Now()
		got, err := os.ReadFile(p)
		if err != nil || string(got) != "cached" {
			t.Fatalf("while down: %q, %v; want the cached value", got, err)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("stale read took %v", time.Since(start))
		}
	}
	start := time.Now()
	_, err := os.ReadFile(d.Path("aws", "svc", "never-read"))
	wantErrno(t, "uncached while down", err, syscall.EIO)
	if el := time.Since(start); el > 15*time.Second { // hang detector: --timeout 3s
		t.Errorf("uncached read while down took %v", el)
	}

	// Back up on the same address, with the data written again.
	k2 := startKumo(t, k.Port)
	defer k2.Stop()
	if _, err := k2.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String("svc/key"), SecretString: aws.String("recovered")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "reads recover", func() bool {
		got, err := os.ReadFile(p)
		return err == nil && string(got) == "recovered"
	})
}
