package aws

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// fakeAWS answers STS AssumeRoleWithWebIdentity (query protocol) with
// credentials whose key id names the token it was given, and Secrets
// Manager GetSecretValue (JSON protocol) with the key id that signed it.
type fakeAWS struct {
	mu     sync.Mutex
	tokens []string // guarded by mu; WebIdentityToken of every STS call
	roles  []string // guarded by mu; RoleArn of every STS call
}

func (f *fakeAWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		r.ParseForm()
		tok, role := r.Form.Get("WebIdentityToken"), r.Form.Get("RoleArn")
		f.mu.Lock()
		f.tokens, f.roles = append(f.tokens, tok), append(f.roles, role)
		f.mu.Unlock()
		if tok == "refused" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>no</Message></Error></ErrorResponse>`)
			return
		}
		fmt.Fprintf(w, `<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>
<AccessKeyId>AKID-%s</AccessKeyId><SecretAccessKey>sk</SecretAccessKey><SessionToken>st</SessionToken>
<Expiration>%s</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>`,
			tok, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
		return
	}
	auth := r.Header.Get("Authorization")
	_, after, _ := strings.Cut(auth, "Credential=")
	keyID, _, _ := strings.Cut(after, "/")
	json.NewEncoder(w).Encode(map[string]any{"Name": "x", "VersionId": "v1", "SecretString": keyID})
}

func TestWebIdentityAssumesTheRoleWithTheCurrentToken(t *testing.T) {
	f := &fakeAWS{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	t.Setenv("AWS_ENDPOINT_URL", srv.URL)
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "node-key")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "node-secret")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")

	var mu sync.Mutex
	token := "pod-token-1"
	ctx := context.Background()
	p, err := New(ctx, Config{WebIdentity: &WebIdentity{RoleARN: "arn:aws:iam::123456789012:role/app", Token: func() ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		return []byte(token), nil
	}}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Get(ctx, "x", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(s.Value), "AKID-pod-token-1"; got != want {
		t.Errorf("signed with %q, want %q: the assumed role's key, not the node's", got, want)
	}
	if _, err := p.Get(ctx, "x", ""); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	if got := len(f.tokens); got != 1 {
		t.Errorf("STS calls for two reads = %d, want 1 (credentials are cached)", got)
	}
	if len(f.roles) > 0 && f.roles[0] != "arn:aws:iam::123456789012:role/app" {
		t.Errorf("RoleArn = %q", f.roles[0])
	}
	f.mu.Unlock()

	mu.Lock()
	token = "refused"
	mu.Unlock()
	q, err := New(ctx, Config{WebIdentity: &WebIdentity{RoleARN: "arn:aws:iam::123456789012:role/app", Token: func() ([]byte, error) { return []byte("refused"), nil }}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = q.Get(ctx, "x", "")
	if got, want := resolver.KindOf(err).String(), resolver.KindPermission.String(); got != want {
		t.Errorf("a refused web identity: kind %s (%v), want %s", got, err, want)
	}
}
