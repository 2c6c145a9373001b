//go:build !secretfs_no_azure

package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/csi"
	"github.com/secretfs/secretfs/providers/azure"
	"github.com/secretfs/secretfs/resolver"
)

func init() {
	backends = append(backends, backend{name: azure.Name, flags: azureFlags})
}

func azureFlags(set *pflag.FlagSet) opener {
	vault := set.String("azure-vault", "", "Azure Key Vault whose secrets azure:NAME reads: its name (NAME.vault.azure.net) or https URL")
	allowed := set.StringSlice("azure-allowed-vault", nil, "csi-provider: a vault (name or URL) a class may name in keyvaultName (repeatable; default: only --azure-vault)")
	open := func(ctx context.Context, log *slog.Logger) (resolver.Provider, error) {
		if *vault == "" {
			return nil, usagef("the azure provider needs --azure-vault")
		}
		p, err := azure.New(azure.Config{Vault: *vault, Logger: log})
		if err != nil {
			return nil, usagef("%v", err)
		}
		return p, nil
	}
	// sameVault: a and b name one vault (names and URLs alike).
	sameVault := func(a, b string) bool {
		ua, erra := azure.VaultURL(a)
		ub, errb := azure.VaultURL(b)
		return erra == nil && errb == nil && ua == ub
	}
	return opener{
		open: open,
		csi: csi.Backend{Role: csi.ParamAzureClientID, Audience: csi.ParamAzureAudience, DefaultAudience: csi.DefaultAzureAudience,
			Params:   []string{csi.ParamAzureVault, csi.ParamAzureClientID, csi.ParamAzureTenantID, csi.ParamAzureAudience},
			Endpoint: csi.ParamAzureVault,
			Allowed: func(v string) bool {
				list := *allowed
				if len(list) == 0 {
					list = []string{*vault}
				}
				return slices.ContainsFunc(list, func(a string) bool { return a != "" && sameVault(a, v) })
			}},
		// A pod's token is the client assertion of its class's clientID
		// (workload identity federation) in tenantId, at the node's
		// authority (AZURE_AUTHORITY_HOST); it reads the class's vault
		// (one the node allows) or the node's.
		pod: func(ctx context.Context, log *slog.Logger, id csi.Identity) (resolver.Provider, error) {
			v := cmp.Or(id.Settings[csi.ParamAzureVault], *vault)
			if v == "" {
				return nil, fmt.Errorf("azure: %w: no vault: the class sets no %s and the node no --azure-vault", resolver.ErrNotFound, csi.ParamAzureVault)
			}
			c := azure.Config{Vault: v, Logger: log}
			if id.NodeCredentials {
				if !sameVault(v, *vault) {
					return nil, fmt.Errorf("azure: %s %q is not the node's vault, and node credentials go to no other: %w", csi.ParamAzureVault, v, resolver.ErrPermission)
				}
				return azure.New(c)
			}
			tenant := cmp.Or(id.Settings[csi.ParamAzureTenantID], os.Getenv("AZURE_TENANT_ID"))
			if tenant == "" {
				return nil, fmt.Errorf("azure: %w: no tenant: the class sets no %s and the node no AZURE_TENANT_ID", resolver.ErrPermission, csi.ParamAzureTenantID)
			}
			cred, err := azidentity.NewClientAssertionCredential(tenant, id.Settings[csi.ParamAzureClientID],
				func(context.Context) (string, error) { return id.Token() }, nil)
			if err != nil {
				return nil, fmt.Errorf("azure: %w: %v", resolver.ErrPermission, err)
			}
			c.Credential, c.PodIdentity = cred, true
			return azure.New(c)
		},
	}
}
