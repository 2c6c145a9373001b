// Package fakejwt reads and makes the service-account tokens (JWTs) that
// the fakes of cloud identity services take (Google's STS, Entra ID):
// like the services, they check the claims; unlike them, never the
// signature, since no test cluster signs its tokens for them.
package fakejwt

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

// Make is a token of issuer (omitted when empty), sub and audience, valid
// for an hour, as kubelet would hand it to the driver; it is not signed.
func Make(issuer, sub, audience string) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims := map[string]any{"sub": sub, "aud": []string{audience}, "exp": time.Now().Add(time.Hour).Unix()}
	if issuer != "" {
		claims["iss"] = issuer
	}
	body, _ := json.Marshal(claims)
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc(body) + "." + enc([]byte("unsigned"))
}
