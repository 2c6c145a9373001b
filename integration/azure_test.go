package integration

import (
	"testing"

	azfake "github.com/secretfs/secretfs/integration/backends/azure"
)

// azureServer is a fake Key Vault and Entra tenant of its own (see
// integration/backends/azure), closed when the test ends.
type azureServer struct {
	*azfake.Fake
	env []string // sends the SDK to the fake, as the node's application
}

const (
	azureTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	azureClient = "00000000-0000-0000-0000-0000000000a1"
)

func startAzure(t *testing.T) *azureServer {
	t.Helper()
	f, err := azfake.New("test-vault", azureTenant)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	f.App(azureClient, "node-secret")
	f.Grant(azureClient)
	env, err := f.Env(t.TempDir(), azureClient)
	if err != nil {
		t.Fatal(err)
	}
	return &azureServer{f, env}
}

// args are the flags that read the fake's vault.
func (a *azureServer) args() []string {
	return []string{"--providers", "azure", "--azure-vault", a.Vault}
}

func azureMount(t *testing.T, a *azureServer, args ...string) *daemon {
	return mount(t, a.env, append(a.args(), args...)...)
}

func TestAzureSmoke(t *testing.T) {
	a := startAzure(t)
	a.Put("db", `{"password":"pw-1"}`)
	out, errOut, code := secretfs(t, a.env, append([]string{"get"}, append(a.args(), "azure:db#password")...)...)
	t.Logf("out=%q err=%q code=%d calls list=%d get=%d token=%d challenge=%d", out, errOut, code, a.Calls("ListSecrets"), a.Calls("GetSecret"), a.Calls("Token"), a.Calls("Challenge"))
}
