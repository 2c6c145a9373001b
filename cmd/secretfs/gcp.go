//go:build !secretfs_no_gcp

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/csi"
	"github.com/secretfs/secretfs/providers/gcp"
	"github.com/secretfs/secretfs/resolver"
)

func init() {
	backends = append(backends, backend{name: gcp.Name, flags: gcpFlags})
}

func gcpFlags(set *pflag.FlagSet) opener {
	project := set.String("gcp-project", "", "Google Cloud project whose Secret Manager secrets gcp:NAME reads (id or number)")
	endpoint := set.String("gcp-endpoint", "", "HOST:PORT of Secret Manager (default: Google's)")
	plain := set.Bool("gcp-insecure", false, "with --gcp-endpoint on a loopback address: plaintext gRPC and no credentials (a local fake or emulator)")
	sts := set.String("gcp-sts-url", gcp.DefaultSTSURL, "csi-provider: the https URL where a pod's token is exchanged for a Google token (workload identity federation)")
	iam := set.String("gcp-iam-credentials-url", gcp.DefaultIAMCredentialsURL, "csi-provider: the https base URL of the IAM credentials API (a class's gcpServiceAccount is impersonated there)")
	config := func() (gcp.Config, error) {
		if *project == "" {
			return gcp.Config{}, usagef("the gcp provider needs --gcp-project")
		}
		for name, v := range map[string]string{"gcp-sts-url": *sts, "gcp-iam-credentials-url": *iam} {
			if u, err := url.Parse(v); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
				return gcp.Config{}, usagef("--%s %q: want an https URL (a pod's token goes there)", name, v)
			}
		}
		return gcp.Config{Project: *project, Endpoint: *endpoint, Insecure: *plain}, nil
	}
	open := func(ctx context.Context, log *slog.Logger) (resolver.Provider, error) {
		c, err := config()
		if err != nil {
			return nil, err
		}
		c.Logger = log
		p, err := gcp.New(c)
		if err != nil {
			return nil, usagef("%v", err)
		}
		return p, nil
	}
	return opener{
		open: open,
		csi: csi.Backend{Role: csi.ParamGCPProvider, Audience: csi.ParamGCPAudience, AudienceOf: csi.GCPDefaultAudience,
			Params: []string{csi.ParamGCPProvider, csi.ParamGCPSA, csi.ParamGCPAudience, csi.ParamGCPProject}},
		// A pod's token is exchanged at the node's STS for its class's
		// pool provider, and impersonates the class's service account if
		// it names one; the class may name another project (its own
		// identity is what IAM checks there).
		pod: func(ctx context.Context, log *slog.Logger, id csi.Identity) (resolver.Provider, error) {
			c, err := config()
			if err != nil {
				return nil, err
			}
			c.Logger = log
			if id.NodeCredentials {
				// The node's credentials read the node's project, as
				// themselves, and nothing else.
				if p := id.Settings[csi.ParamGCPProject]; p != "" && p != c.Project {
					return nil, fmt.Errorf("gcp: %w: %s %q is not the node's project, and node credentials read no other", resolver.ErrPermission, csi.ParamGCPProject, p)
				}
				if id.Settings[csi.ParamGCPSA] != "" {
					return nil, fmt.Errorf("gcp: %w: %s needs %s (the node's own credentials impersonate nobody)", resolver.ErrPermission, csi.ParamGCPSA, csi.ParamGCPProvider)
				}
			} else if p := id.Settings[csi.ParamGCPProject]; p != "" {
				c.Project = p
			}
			if !id.NodeCredentials {
				c.Federation = &gcp.Federation{Provider: id.Settings[csi.ParamGCPProvider], ServiceAccount: id.Settings[csi.ParamGCPSA],
					Token: id.Token, STSURL: *sts, IAMCredentialsURL: *iam}
			}
			return gcp.New(c)
		},
	}
}
