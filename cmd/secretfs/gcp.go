//go:build !secretfs_no_gcp

package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/csi"
	"github.com/secretfs/secretfs/providers/gcp"
	"github.com/secretfs/secretfs/resolver"
)

func init() {
	backends = append(backends, backend{name: gcp.Name, flags: gcpFlags})
}

// paramGCPIdentity would give a pod its own Google identity (workload
// identity federation); csi-provider does not offer that yet, so a class
// gets the node's credentials, with --allow-node-credentials, or nothing.
const paramGCPIdentity = "gcpWorkloadIdentityProvider"

func gcpFlags(set *pflag.FlagSet) opener {
	project := set.String("gcp-project", "", "Google Cloud project whose Secret Manager secrets gcp:NAME reads (id or number)")
	endpoint := set.String("gcp-endpoint", "", "HOST:PORT of Secret Manager (default: Google's)")
	plain := set.Bool("gcp-insecure", false, "with --gcp-endpoint on a loopback address: plaintext gRPC and no credentials (a local fake or emulator)")
	open := func(ctx context.Context, log *slog.Logger) (resolver.Provider, error) {
		if *project == "" {
			return nil, usagef("the gcp provider needs --gcp-project")
		}
		p, err := gcp.New(gcp.Config{Project: *project, Endpoint: *endpoint, Insecure: *plain, Logger: log})
		if err != nil {
			return nil, usagef("%v", err)
		}
		return p, nil
	}
	return opener{
		open: open,
		csi:  csi.Backend{Role: paramGCPIdentity},
		pod: func(ctx context.Context, log *slog.Logger, id csi.Identity) (resolver.Provider, error) {
			if !id.NodeCredentials {
				return nil, fmt.Errorf("gcp: %w: a pod's own Google identity (%s) is not supported yet; the node's credentials serve with --allow-node-credentials", resolver.ErrPermission, paramGCPIdentity)
			}
			return open(ctx, log)
		},
	}
}
