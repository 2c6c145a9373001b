//go:build !secretfs_no_vault

package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/secretfs/secretfs/config"
	"github.com/secretfs/secretfs/csi"
	"github.com/secretfs/secretfs/providers/vault"
	"github.com/secretfs/secretfs/resolver"
)

func init() {
	backends = append(backends, backend{name: vault.Name, flags: vaultFlags})
}

// sameAddress reports whether two Vault addresses name one place: the same
// scheme, host and port (a trailing slash, case of the host aside).
func sameAddress(a, b string) bool {
	ua, err1 := url.Parse(strings.TrimRight(a, "/"))
	ub, err2 := url.Parse(strings.TrimRight(b, "/"))
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && strings.EqualFold(ua.Host, ub.Host) && ua.Path == ub.Path
}

func vaultFlags(set *pflag.FlagSet) opener {
	var c vault.Config
	set.StringVar(&c.Address, "vault-addr", "", "Vault address (default: VAULT_ADDR)")
	set.StringVar(&c.Namespace, "vault-namespace", "", "Vault namespace (default: VAULT_NAMESPACE)")
	set.StringVar(&c.Auth, "vault-auth", vault.AuthToken, "Vault auth method: token, approle, kubernetes or jwt")
	set.StringVar(&c.AuthMount, "vault-auth-mount", "", "mount path of the auth method (default: the method's name)")
	set.StringVar(&c.TokenFile, "vault-token-file", "", "file holding the Vault token (token auth; default: VAULT_TOKEN, then ~/.vault-token)")
	set.StringVar(&c.RoleIDFile, "vault-role-id-file", "", "file holding the AppRole role id")
	set.StringVar(&c.SecretIDFile, "vault-secret-id-file", "", "file holding the AppRole secret id")
	set.StringVar(&c.Role, "vault-role", "", "role to log in as (kubernetes and jwt auth)")
	set.StringVar(&c.JWTFile, "vault-jwt-file", "", "file holding the JWT, read at every login (kubernetes default: "+vault.DefaultKubernetesJWT+")")
	set.StringSliceVar(&c.Mounts, "vault-mounts", nil, "KV mounts to list at the top, for tokens that may not list mounts (e.g. secret,kv)")
	set.BoolVar(&c.RevokeOnExit, "vault-revoke-on-exit", false, "revoke the leases (dynamic secrets) this process took when it stops cleanly; by default they are left to expire")
	allowed := set.StringArray("vault-allowed-address", nil, "a Vault address a SecretProviderClass may name as vaultAddress (repeatable; default: only --vault-addr)")
	return opener{
		section: "vault-issue", brings: []string{vault.IssuedName},
		configure: func(n *yaml.Node) error {
			var issues []vault.Issue
			if err := config.Decode(n, &issues); err != nil {
				return err
			}
			seen := make(map[string]bool)
			for _, is := range issues {
				if err := is.Check(); err != nil {
					return err
				}
				if seen[is.Name] {
					return fmt.Errorf("vault-issue: name %q given twice", is.Name)
				}
				seen[is.Name] = true
			}
			c.Issue = issues
			return nil
		},
		open: func(ctx context.Context, log *slog.Logger) (resolver.Provider, error) {
			c := c
			c.Logger = log
			return vault.New(ctx, c)
		},
		csi: csi.Backend{Role: csi.ParamVaultRole, Audience: csi.ParamVaultAudience, DefaultAudience: csi.DefaultVaultAudience,
			Params:   []string{csi.ParamVaultAddress, csi.ParamVaultRole, csi.ParamVaultAuthMount, csi.ParamVaultNamespace, csi.ParamVaultAudience},
			Endpoint: csi.ParamVaultAddress,
			Allowed: func(addr string) bool {
				list := *allowed
				if len(list) == 0 {
					list = []string{cmp.Or(c.Address, os.Getenv("VAULT_ADDR"))}
				}
				return slices.ContainsFunc(list, func(a string) bool { return a != "" && sameAddress(a, addr) })
			}},
		pod: func(ctx context.Context, log *slog.Logger, id csi.Identity) (resolver.Provider, error) {
			c := c
			c.Logger = log
			c.RevokeOnExit = false // an identity let go when idle is no exit: its pods may still use what they read
			addr := id.Settings[csi.ParamVaultAddress]
			if id.NodeCredentials {
				// The node's token goes to the node's Vault and nowhere else.
				node := cmp.Or(c.Address, os.Getenv("VAULT_ADDR"))
				if addr != "" && strings.TrimRight(addr, "/") != strings.TrimRight(node, "/") {
					return nil, fmt.Errorf("vault: %s %q is not the node's Vault, and node credentials go to no other: %w",
						csi.ParamVaultAddress, addr, resolver.ErrPermission)
				}
				return vault.New(ctx, c)
			}
			// The pod logs in with its own token (Kubernetes or JWT auth:
			// one login request) and nothing of the node's.
			c = vault.Config{Address: cmp.Or(addr, c.Address), Namespace: cmp.Or(id.Settings[csi.ParamVaultNamespace], c.Namespace),
				Auth: vault.AuthKubernetes, AuthMount: cmp.Or(id.Settings[csi.ParamVaultAuthMount], "kubernetes"),
				Role: id.Settings[csi.ParamVaultRole], JWT: id.Token, Mounts: c.Mounts, Logger: log}
			return vault.New(ctx, c)
		},
	}
}
