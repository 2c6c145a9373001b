package main

import (
	"context"
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/providers/vault"
	"github.com/secretfs/secretfs/resolver"
)

func init() {
	backends = append(backends, backend{name: vault.Name, flags: vaultFlags})
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
	return func(ctx context.Context, log *slog.Logger) (resolver.Provider, error) {
		c := c
		c.Logger = log
		return vault.New(ctx, c)
	}
}
