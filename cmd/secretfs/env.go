//go:build !secretfs_no_env

package main

import (
	"context"
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/csi"
	"github.com/secretfs/secretfs/providers/env"
	"github.com/secretfs/secretfs/resolver"
)

func init() {
	backends = append(backends, backend{name: env.Name, flags: envFlags, podOptIn: true})
}

func envFlags(set *pflag.FlagSet) opener {
	allow := set.StringSlice("env-allow", []string{"*"},
		"glob of environment variables the env provider shows (repeatable); VAULT_TOKEN, AWS_SECRET_ACCESS_KEY, AWS_SECRET_KEY, AWS_SESSION_TOKEN, AWS_CONTAINER_AUTHORIZATION_TOKEN and SECRETFS_* only when named exactly")
	open := func(context.Context, *slog.Logger) (resolver.Provider, error) {
		p, err := env.New(*allow)
		if err != nil {
			return nil, usagef("%v", err)
		}
		return p, nil
	}
	// Offered to pods only with csi-provider --allow-env: it is the node
	// plugin's own environment.
	return opener{open: open, pod: func(ctx context.Context, log *slog.Logger, _ csi.Identity) (resolver.Provider, error) {
		return open(ctx, log)
	}}
}
