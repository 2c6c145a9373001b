package main

import (
	"context"
	"log/slog"

	"github.com/spf13/pflag"

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
	return func(ctx context.Context, log *slog.Logger) (resolver.Provider, error) {
		return aws.New(ctx, aws.Config{Region: *region, Profile: *profile, Prefixes: *prefixes, Logger: log})
	}
}
