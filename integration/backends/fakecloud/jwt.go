// Package fakecloud is what the fakes of cloud services share: the
// service-account tokens (JWTs) their identity services take (Google's
// STS, Entra ID), which they check by their claims, like the services, and
// never by their signature, since no test cluster signs its tokens for
// them; and the self-signed certificate they serve TLS with, which the
// client trusts through SSL_CERT_FILE.
package fakecloud

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Claims are the claims the fakes check.
type Claims struct {
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Aud json.RawMessage `json:"aud"` // a string or a list of them
}

// HasAudience reports whether aud is the token's audience or one of them.
func (c Claims) HasAudience(aud string) bool {
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return one == aud
	}
	var many []string
	return json.Unmarshal(c.Aud, &many) == nil && slices.Contains(many, aud)
}

// Parse reads tok's claims without checking its signature.
func Parse(tok string) (Claims, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return Claims{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c Claims
	if err != nil || json.Unmarshal(b, &c) != nil {
		return Claims{}, false
	}
	return c, true
}

// MakeJWT is a token of issuer (omitted when empty), sub and audience, valid
// for an hour, as kubelet would hand it to the driver; it is not signed.
func MakeJWT(issuer, sub, audience string) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims := map[string]any{"sub": sub, "aud": []string{audience}, "exp": time.Now().Add(time.Hour).Unix()}
	if issuer != "" {
		claims["iss"] = issuer
	}
	body, _ := json.Marshal(claims)
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc(body) + "." + enc([]byte("unsigned"))
}
