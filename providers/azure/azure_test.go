package azure

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/secretfs/secretfs/resolver"
)

// responseError is the SDK's error of an answer with status and body.
func responseError(status int, body string) error {
	req, _ := http.NewRequest(http.MethodGet, "https://v.vault.azure.net/secrets/x", nil)
	return runtime.NewResponseError(&http.Response{StatusCode: status, Status: http.StatusText(status), Request: req,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body))})
}

func TestErrorsAreClassified(t *testing.T) {
	p, err := New(Config{Vault: "my-vault"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		err       error
		kind      resolver.Kind
		throttled bool
	}{
		{"404", responseError(404, `{"error":{"code":"SecretNotFound","message":"m"}}`), resolver.KindNotFound, false},
		{"403 disabled", responseError(403, `{"error":{"code":"Forbidden","message":"m","innererror":{"code":"SecretDisabled"}}}`), resolver.KindNotFound, false},
		{"403 rbac", responseError(403, `{"error":{"code":"Forbidden","message":"m","innererror":{"code":"ForbiddenByRbac"}}}`), resolver.KindPermission, false},
		{"401", responseError(401, `{"error":{"code":"Unauthorized","message":"m"}}`), resolver.KindUnavailable, false},
		{"429", responseError(429, `{"error":{"code":"Throttled","message":"m"}}`), resolver.KindUnavailable, true},
		{"503", responseError(503, ``), resolver.KindUnavailable, false},
		{"400", responseError(400, `{"error":{"code":"BadParameter","message":"m"}}`), resolver.KindNotFound, false},
		{"400 on a listing", responseError(400, `{"error":{"code":"BadParameter","message":"m"}}`), resolver.KindUnknown, false},
		{"409", responseError(409, `{"error":{"code":"Conflict","message":"m"}}`), resolver.KindUnknown, false},
		{"deadline", context.DeadlineExceeded, resolver.KindUnavailable, false},
		{"canceled", context.Canceled, resolver.KindCanceled, false},
		{"no credential", errors.New("DefaultAzureCredential: failed to acquire a token.\nAttempted credentials:\n\tEnvironmentCredential: missing"), resolver.KindUnavailable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := "GetSecret"
			if strings.Contains(tc.name, "listing") {
				op = "ListSecretProperties"
			}
			got := p.mapError(op, "k", tc.err)
			if k := resolver.KindOf(got); k != tc.kind {
				t.Errorf("kind %v (%v), want %v", k, got, tc.kind)
			}
			if th := errors.Is(got, resolver.ErrThrottled); th != tc.throttled {
				t.Errorf("throttled %v, want %v", th, tc.throttled)
			}
			if strings.Contains(got.Error(), "\n") {
				t.Errorf("a multi-line error: %q", got)
			}
		})
	}
}

func TestVaultURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"my-vault", "https://my-vault.vault.azure.net/"},
		{"My-Vault", "https://my-vault.vault.azure.net/"},
		{"https://my-vault.vault.azure.net", "https://my-vault.vault.azure.net/"},
		{"https://My-Vault.vault.usgovcloudapi.net/", "https://my-vault.vault.usgovcloudapi.net/"},
		{"http://my-vault.vault.azure.net", ""},
		{"https://user@my-vault.vault.azure.net", ""},
		{"https://my-vault.vault.azure.net/secrets/x", ""},
		{"ab", ""},
		{"-vault", ""},
		{"", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := VaultURL(tc.in)
			if (err != nil) != (tc.want == "") || got != tc.want {
				t.Errorf("VaultURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestUnservable(t *testing.T) {
	now := time.Now()
	before, after := now.Add(-time.Minute), now.Add(time.Minute)
	yes, no := true, false
	for _, tc := range []struct {
		name  string
		attrs *azsecrets.SecretAttributes
		want  string
	}{
		{"no attributes", nil, ""},
		{"enabled", &azsecrets.SecretAttributes{Enabled: &yes}, ""},
		{"disabled", &azsecrets.SecretAttributes{Enabled: &no}, "disabled"},
		{"expired", &azsecrets.SecretAttributes{Expires: &before}, "expired"},
		{"expires later", &azsecrets.SecretAttributes{Expires: &after}, ""},
		{"not yet valid", &azsecrets.SecretAttributes{NotBefore: &after}, "not yet valid"},
		{"valid since", &azsecrets.SecretAttributes{NotBefore: &before}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := unservable(tc.attrs, now); got != tc.want {
				t.Errorf("unservable = %q, want %q", got, tc.want)
			}
		})
	}
}

// Names and versions the service would refuse are not found without a
// call (the credential is never asked).
func TestBadNamesAreNotFoundWithoutACall(t *testing.T) {
	p, err := New(Config{Vault: "my-vault", Credential: failingCredential{t}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ key, version string }{
		{"a/b", ""}, {"under_score", ""}, {"", ""}, {strings.Repeat("a", 128), ""}, {"db", "3"}, {"db", strings.Repeat("G", 32)},
	} {
		if _, err := p.Get(context.Background(), tc.key, tc.version); !errors.Is(err, resolver.ErrNotFound) {
			t.Errorf("Get(%q, %q) = %v, want not found", tc.key, tc.version, err)
		}
	}
	if _, err := p.List(context.Background(), "dir"); !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("List(dir) = %v, want not found", err)
	}
}

type failingCredential struct{ t *testing.T }

func (c failingCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.t.Error("the credential was asked for a token")
	return azcore.AccessToken{}, errors.New("no")
}

// Only Key Vault's 403 to a listing says the listing is denied: Entra ID
// refusing an identity, or a 403 to a read, is another matter.
func TestListDeniedIsToldApart(t *testing.T) {
	p, err := New(Config{Vault: "my-vault", PodIdentity: true})
	if err != nil {
		t.Fatal(err)
	}
	forbidden := func() error { return responseError(403, `{"error":{"code":"Forbidden","message":"m"}}`) }
	if err := p.mapError(opList, "", forbidden()); !errors.Is(err, errListDenied) || !errors.Is(err, resolver.ErrPermission) {
		t.Errorf("403 to a listing: %v, want the listing denied (and a permission error)", err)
	}
	if err := p.mapError(opGet, "k", forbidden()); errors.Is(err, errListDenied) {
		t.Errorf("403 to a read: %v, not the listing", err)
	}
}
