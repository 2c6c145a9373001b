package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// The benchmarks print figures and assert nothing about speed: the
// machines are noisy, so what matters is the ratio measured in one run.
// Run them with `make bench`.

const secret30 = "abcdefghijklmnopqrstuvwxyz0123" // 30 bytes

// readOnce is one open+read+close of a small file. Like os.Open, it
// retries EINTR: the Go runtime's preemption signals interrupt FUSE
// requests that wait for a backend, and secretfs answers those with EINTR.
func readOnce(path string, buf []byte) error {
	fd, err := syscall.Open(path, syscall.O_RDONLY, 0)
	for err == syscall.EINTR {
		fd, err = syscall.Open(path, syscall.O_RDONLY, 0)
	}
	if err != nil {
		return err
	}
	_, err = syscall.Read(fd, buf)
	for err == syscall.EINTR {
		_, err = syscall.Read(fd, buf)
	}
	if cerr := syscall.Close(fd); err == nil {
		err = cerr
	}
	return err
}

type result struct {
	opsPerSec float64
	p50       time.Duration
}

// measure runs total reads of path split over threads and returns the
// throughput and the median latency.
func measure(b *testing.B, paths []string, threads, total int) result {
	b.Helper()
	lat := make([][]time.Duration, threads)
	var wg sync.WaitGroup
	start := time.Now()
	for th := range threads {
		wg.Go(func() {
			buf := make([]byte, 4096)
			own := make([]time.Duration, 0, total/threads)
			for i := range total / threads {
				t0 := time.Now()
				if err := readOnce(paths[(th+i)%len(paths)], buf); err != nil {
					b.Error(err)
					return
				}
				own = append(own, time.Since(t0))
			}
			lat[th] = own
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		b.Fatal("no reads measured")
	}
	return result{opsPerSec: float64(len(all)) / elapsed.Seconds(), p50: all[len(all)/2]}
}

// tmpfsDir mounts a private tmpfs for the comparison.
func tmpfsDir(b *testing.B) string {
	dir := b.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m"); err != nil {
		b.Fatalf("mount tmpfs: %v", err)
	}
	b.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// BenchmarkWarmRead compares a warm open+read+close of a 30-byte secret
// through the mount with the same file on tmpfs, with 1, 2 and 4 threads,
// in the fast mode (opens stay in the kernel), in audit mode (every open
// reaches the daemon and is recorded; data comes from the page cache), and
// with an allow rule checked on every open as well.
func BenchmarkWarmRead(b *testing.B) {
	const total = 20000
	tmp := tmpfsDir(b)
	tmpFile := filepath.Join(tmp, "SECRET")
	if err := os.WriteFile(tmpFile, []byte(secret30), 0o400); err != nil {
		b.Fatal(err)
	}
	modes := []struct {
		name string
		args []string
	}{
		{"fast", nil},
		{"audit", []string{"--audit-log", filepath.Join(b.TempDir(), "audit.jsonl")}},
		{"rules", []string{"--audit-log", filepath.Join(b.TempDir(), "audit-rules.jsonl"), "--config", rulesConfig(b)}},
	}
	fmt.Printf("\nwarm open+read+close of a 30-byte secret, %d reads per row\n", total)
	fmt.Printf("%-6s %-8s %12s %12s %12s %12s %9s %9s\n", "mode", "threads", "tmpfs ops/s", "sfs ops/s", "tmpfs p50", "sfs p50", "ops ratio", "p50 ratio")
	for _, m := range modes {
		args := append([]string{"--env-allow", "BENCH_*", "--log-level", "warn"}, m.args...)
		d := mount(b, []string{"BENCH_SECRET=" + secret30}, args...)
		mnt := d.Path("env", "BENCH_SECRET")
		if err := readOnce(mnt, make([]byte, 64)); err != nil { // warm the cache
			b.Fatal(err)
		}
		for _, threads := range []int{1, 2, 4} {
			tr := measure(b, []string{tmpFile}, threads, total)
			mr := measure(b, []string{mnt}, threads, total)
			fmt.Printf("%-6s %-8d %12.0f %12.0f %12v %12v %8.1fx %8.1fx\n", m.name, threads, tr.opsPerSec, mr.opsPerSec, tr.p50, mr.p50,
				tr.opsPerSec/mr.opsPerSec, float64(mr.p50)/float64(tr.p50))
			b.ReportMetric(tr.opsPerSec/mr.opsPerSec, fmt.Sprintf("tmpfs/secretfs-%s-%dthr", m.name, threads))
		}
		d.stop()
	}
	fmt.Println("ops ratio: tmpfs ops/s ÷ secretfs ops/s; p50 ratio: secretfs median ÷ tmpfs median")
}

// rulesConfig writes a config whose allow rule matches the benchmark's
// secret: every open checks the caller's uid, program and cgroup.
func rulesConfig(b *testing.B) string {
	exe, _ := os.Executable()
	p := filepath.Join(b.TempDir(), "rules.yaml")
	text := fmt.Sprintf("rules:\n  - path: \"env/**\"\n    allow: {uids: [%d], exe: [%q], cgroups: [\"*\"]}\n", os.Getuid(), exe)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkColdRead reads keys for the first time: each read is a lookup,
// a provider call (the test provider, which reads a local file) and the
// open+read+close, against the warm read of the same keys afterwards.
func BenchmarkColdRead(b *testing.B) {
	const keys = 2000
	dir := b.TempDir()
	var paths []string
	for i := range keys {
		name := fmt.Sprintf("k%04d", i)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(secret30), 0o600); err != nil {
			b.Fatal(err)
		}
		paths = append(paths, name)
	}
	d := mount(b, nil, "--providers", "test", "--test-dir", dir, "--log-level", "warn")
	for i := range paths {
		paths[i] = d.Path("test", paths[i])
	}
	cold := measure(b, paths, 1, keys)
	warm := measure(b, paths, 1, keys)
	fmt.Printf("\ncold vs warm read, %d distinct keys, 1 thread (test provider: a local file per key)\n", keys)
	fmt.Printf("cold: %8.0f ops/s, median %v\nwarm: %8.0f ops/s, median %v\ncold/warm median: %.1fx\n",
		cold.opsPerSec, cold.p50, warm.opsPerSec, warm.p50, float64(cold.p50)/float64(warm.p50))
	b.ReportMetric(float64(cold.p50.Microseconds()), "cold-median-µs")
}

// BenchmarkAWS compares a cold read through the mount with a direct
// GetSecretValue against the kumo emulator, and counts the API calls of
// 1,000 reads of 100 secrets within one TTL.
func BenchmarkAWS(b *testing.B) {
	k := startKumo(b, 0)
	defer k.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := k.Client()
	const n = 100
	for i := range n {
		if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(fmt.Sprintf("bench/s%03d", i)), SecretString: aws.String(secret30)}); err != nil {
			b.Fatal(err)
		}
	}
	// Direct: the SDK client in this process, one call per read.
	var direct []time.Duration
	for round := range 5 {
		for i := range n {
			t0 := time.Now()
			if _, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(fmt.Sprintf("bench/s%03d", i))}); err != nil {
				b.Fatal(err)
			}
			if round > 0 { // the first round warms connections
				direct = append(direct, time.Since(t0))
			}
		}
	}
	slices.Sort(direct)

	d := awsMount(b, k, "--ttl", "10m")
	var paths []string
	for i := range n {
		paths = append(paths, d.Path("aws", "bench", fmt.Sprintf("s%03d", i)))
	}
	cold := measure(b, paths, 1, n) // first read of each: lookup + GetSecretValue + open/read
	callsAfterCold := apiCalls(d, "GetSecretValue")
	for range 10 {
		measure(b, paths, 1, n)
	}
	calls := apiCalls(d, "GetSecretValue")
	fmt.Printf("\nAWS (kumo on loopback), %d secrets\n", n)
	fmt.Printf("direct GetSecretValue median:      %v\n", direct[len(direct)/2])
	fmt.Printf("cold read through the mount median: %v (%.1fx direct)\n", cold.p50, float64(cold.p50)/float64(direct[len(direct)/2]))
	fmt.Printf("GetSecretValue calls: %d for the first %d reads, %d for all %d reads within one TTL\n", callsAfterCold, n, calls, n*11)
	b.ReportMetric(float64(calls), "api-calls")
}

// BenchmarkVault compares a cold read through the mount with a direct
// KVv2.Get against a Vault dev server.
func BenchmarkVault(b *testing.B) {
	v := startVault(b, 0)
	defer v.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := v.Client()
	const n = 100
	for i := range n {
		if _, err := c.KVv2("secret").Put(ctx, fmt.Sprintf("bench/s%03d", i), map[string]any{"v": secret30}); err != nil {
			b.Fatal(err)
		}
	}
	var direct []time.Duration
	for round := range 5 {
		for i := range n {
			t0 := time.Now()
			if _, err := c.KVv2("secret").Get(ctx, fmt.Sprintf("bench/s%03d", i)); err != nil {
				b.Fatal(err)
			}
			if round > 0 {
				direct = append(direct, time.Since(t0))
			}
		}
	}
	slices.Sort(direct)
	d := vaultMount(b, v, "root", "--ttl", "10m", "--log-level", "warn")
	readDir(b, d.Path("vault", "secret", "bench")) // the mount lookup and listing are not part of a secret's cold read
	var paths []string
	for i := range n {
		paths = append(paths, d.Path("vault", "secret", "bench", fmt.Sprintf("s%03d#v", i)))
	}
	cold := measure(b, paths, 1, n)
	warm := measure(b, paths, 1, n)
	fmt.Printf("\nVault dev server on loopback, %d KV v2 secrets\n", n)
	fmt.Printf("direct KVv2.Get median:             %v\n", direct[len(direct)/2])
	fmt.Printf("cold read through the mount median: %v (%.1fx direct)\n", cold.p50, float64(cold.p50)/float64(direct[len(direct)/2]))
	fmt.Printf("warm read through the mount median: %v\n", warm.p50)
	b.ReportMetric(float64(cold.p50.Microseconds()), "cold-median-µs")
}

// BenchmarkAWSScale measures, against the patched emulator holding 2,000
// and 10,000 secrets, the API calls and wall time of a first read four
// levels deep, of a full `ls -R`, and of a cold read of every secret (a
// fresh mount, each file read without listing first).
func BenchmarkAWSScale(b *testing.B) {
	fmt.Printf("\nAWS at account scale (patched kumo on loopback)\n")
	fmt.Printf("%-8s %-22s %8s %8s %8s %8s %10s\n", "secrets", "what", "Get", "List", "Batch", "all", "wall")
	for _, dirs := range []int{20, 100} {
		k := startKumo(b, 0)
		if err := seedScale(k, dirs, 0); err != nil {
			b.Fatal(err)
		}
		n := dirs*100 + 1
		row := func(what string, d *daemon, start time.Time) {
			d.syncLog(b, "aws")
			d.mu.Lock()
			syncs := d.syncs
			d.mu.Unlock()
			get, list, batch := apiCalls(d, "GetSecretValue")-syncs, apiCalls(d, "ListSecrets"), apiCalls(d, "BatchGetSecretValue")
			fmt.Printf("%-8d %-22s %8d %8d %8d %8d %10v\n", n, what, get, list, batch, get+list+batch, time.Since(start).Round(time.Millisecond))
		}
		d := awsMount(b, k, "--log-level", "debug")
		start := time.Now()
		if _, err := os.ReadFile(d.Path("aws", scaleName(7, 50))); err != nil {
			b.Fatal(err)
		}
		row("first deep read", d, start)

		d = awsMount(b, k, "--log-level", "debug")
		start = time.Now()
		if files := walkAll(b, d.Path("aws"), false); files != n-1 { // scale/d03 shows as d03@ beside the directory
			if files != n {
				b.Fatalf("ls -R found %d files, want %d", files, n)
			}
		}
		row("ls -R", d, start)

		d = awsMount(b, k, "--log-level", "debug")
		start = time.Now()
		for dd := range dirs {
			for s := range 100 {
				if _, err := os.ReadFile(d.Path("aws", scaleName(dd, s))); err != nil {
					b.Fatal(err)
				}
			}
		}
		row("cold read of each", d, start)
		k.Stop()
	}
}
