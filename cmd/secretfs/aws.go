//go:build !secretfs_no_aws

package main

import (
	"context"
	"log/slog"
	"regexp"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/csi"
	"github.com/secretfs/secretfs/providers/aws"
	"github.com/secretfs/secretfs/resolver"
)

func init() {
	backends = append(backends, backend{name: aws.Name, flags: awsFlags})
}

func awsFlags(set *pflag.FlagSet) opener {
	region := set.String("aws-region", "", "AWS region (default: the SDK's chain, e.g. AWS_REGION or the profile's)")
	profile := set.String("aws-profile", "", "AWS shared config profile (default: the SDK's chain, e.g. AWS_PROFILE)")
	prefixes := set.StringSlice("aws-prefix", nil, "only AWS secret names starting with this are listed and readable (repeatable); others are ENOENT without an API call")
	return opener{
		open: func(ctx context.Context, log *slog.Logger) (resolver.Provider, error) {
			return aws.New(ctx, aws.Config{Region: *region, Profile: *profile, Prefixes: *prefixes, Logger: log})
		},
		csi: csi.Backend{Role: csi.ParamAWSRoleARN, Audience: csi.ParamAWSAudience, DefaultAudience: csi.DefaultAWSAudience,
			Params: []string{csi.ParamAWSRegion, csi.ParamAWSRoleARN, csi.ParamAWSAudience}},
		// A pod assumes its class's awsRoleArn with its own token; the
		// flags give the region (unless the class does) and the prefixes.
		pod: func(ctx context.Context, log *slog.Logger, id csi.Identity) (resolver.Provider, error) {
			c := aws.Config{Region: *region, Prefixes: *prefixes, Logger: log}
			if r := id.Settings[csi.ParamAWSRegion]; r != "" {
				c.Region = r
			}
			if id.NodeCredentials {
				c.Profile = *profile
			} else {
				c.WebIdentity = &aws.WebIdentity{RoleARN: id.Settings[csi.ParamAWSRoleARN], SessionName: sessionName(id),
					Token: func() ([]byte, error) { t, err := id.Token(); return []byte(t), err }}
			}
			return aws.New(ctx, c)
		},
	}
}

var notSessionName = regexp.MustCompile(`[^\w+=,.@-]`)

// sessionName names the assumed role's session after the pod's identity
// (CloudTrail shows it): secretfs-NAMESPACE-SERVICEACCOUNT, at most 64.
func sessionName(id csi.Identity) string {
	n := notSessionName.ReplaceAllString("secretfs-"+id.Namespace+"-"+id.ServiceAccount, "_")
	return n[:min(len(n), 64)]
}
