package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// A vault-issue: entry of the config file issues a PKI certificate on a
// real Vault: its fields are one issuance (the certificate and its key
// match, the chain verifies to the CA), and `secretfs get` reads it too.
func TestVaultIssuedCertificate(t *testing.T) {
	t.Parallel()
	v := startVault(t, 0)
	defer v.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := v.Client()
	if err := c.Sys().MountWithContext(ctx, "pki", &api.MountInput{Type: "pki", Config: api.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
		t.Fatal(err)
	}
	root, err := c.Logical().WriteWithContext(ctx, "pki/root/generate/internal", map[string]any{"common_name": "secretfs test CA", "ttl": "8760h"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "pki/roles/web", map[string]any{"allowed_domains": "example.com", "allow_subdomains": true, "max_ttl": "72h"}); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "config.yaml", `vault-issue:
  - name: web
    path: pki/issue/web
    data: {common_name: app.example.com, ttl: 24h}
`)
	d := vaultMount(t, v, "root", "--config", cfg)
	read := func(f string) []byte {
		t.Helper()
		b, err := os.ReadFile(d.Path("vault-issued/web#" + f))
		if err != nil {
			t.Fatalf("cat vault-issued/web#%s: %v", f, err)
		}
		return b
	}
	certPEM, keyPEM, chain := read("certificate"), read("private_key"), read("ca_chain")
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("the certificate and key of one read do not match: %v", err)
	}
	if again := read("certificate"); string(again) != string(certPEM) {
		t.Fatal("a second read issued another certificate")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(root.Data["certificate"].(string))) {
		t.Fatal("the CA's certificate")
	}
	b, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "app.example.com"}); err != nil {
		t.Fatalf("the certificate does not verify to the CA: %v", err)
	}
	if !strings.Contains(string(chain), "BEGIN CERTIFICATE") {
		t.Fatalf("ca_chain: got %q, want PEM blocks", chain)
	}
	if got := cert.NotAfter.Sub(cert.NotBefore); got < 23*time.Hour || got > 25*time.Hour {
		t.Fatalf("validity: got %s, want about 24h", got)
	}
	names, err := os.ReadDir(d.Path("vault-issued"))
	if err != nil || len(names) != 1 || names[0].Name() != "web" {
		t.Fatalf("ls vault-issued: got %v, %v, want web", names, err)
	}
	out, _, code := secretfs(t, v.Env(t, "root"), "get", "--config", cfg, "vault-issued:web#certificate")
	if code != 0 || !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Fatalf("secretfs get vault-issued:web#certificate: exit %d, %q", code, out)
	}
}
