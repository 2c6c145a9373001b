//go:build secretfs_testing

package main

import (
	"context"
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/csi"
	"github.com/secretfs/secretfs/internal/testprovider"
	"github.com/secretfs/secretfs/resolver"
)

// The test provider exists only in binaries built with -tags secretfs_testing
// (the integration tests build one).
func init() {
	backends = append(backends, backend{name: "test", flags: func(set *pflag.FlagSet) opener {
		dir := set.String("test-dir", "", "directory the test provider serves (test builds only)")
		open := func(context.Context, *slog.Logger) (resolver.Provider, error) {
			if *dir == "" {
				return nil, usagef("--test-dir is required with the test provider")
			}
			return &testprovider.Provider{ProviderName: "test", Dir: *dir}, nil
		}
		return opener{open: open, pod: func(ctx context.Context, log *slog.Logger, _ csi.Identity) (resolver.Provider, error) {
			return open(ctx, log)
		}}
	}})
}
