package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/secretfs/secretfs/resolver"
)

const getUsage = `Usage: secretfs get [flags] PROVIDER:KEY[@VERSION][#FIELD]

Writes the secret's value to stdout, byte for byte, and nothing else.
`

const lsUsage = `Usage: secretfs ls [flags] PROVIDER:[DIR]

Lists the entries directly below DIR, one a line; directories end in "/".
`

// withResolver opens the enabled providers behind a resolver, uncached,
// runs f with a context that SIGINT and SIGTERM cancel, and closes them.
func (c *common) withResolver(stderr io.Writer, f func(context.Context, *resolver.Resolver) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	d, err := c.deadlines()
	if err != nil {
		return err
	}
	r, ps, err := c.openResolver(ctx, log, d)
	if err != nil {
		return err
	}
	defer closeAll(ps)
	return f(ctx, r)
}

func runGet(args []string, stdout, stderr io.Writer) error {
	c := newCommon("get")
	if err := c.parse(args, stdout, getUsage); err != nil {
		return helpOK(err)
	}
	if c.flagSet.NArg() != 1 {
		return usagef("get takes one reference, PROVIDER:KEY[@VERSION][#FIELD]")
	}
	ref, err := resolver.Parse(c.flagSet.Arg(0))
	if err != nil {
		return err
	}
	c.enable(ref.Provider)
	return c.withResolver(stderr, func(ctx context.Context, r *resolver.Resolver) error {
		s, err := r.Get(ctx, ref)
		if err != nil {
			return err
		}
		if s.Lease != nil {
			// The read made a lease: say so, and leave it to expire.
			fmt.Fprintf(stderr, "secretfs: %s is a lease of %s (renewable: %t); it is left to expire, not revoked\n",
				ref, s.Lease.Term().Round(time.Second), s.Lease.Renewable)
		}
		_, err = stdout.Write(s.Value)
		return err
	})
}

func runLs(args []string, stdout, stderr io.Writer) error {
	c := newCommon("ls")
	if err := c.parse(args, stdout, lsUsage); err != nil {
		return helpOK(err)
	}
	if c.flagSet.NArg() != 1 {
		return usagef("ls takes one argument, PROVIDER:[DIR]")
	}
	provider, dir, ok := strings.Cut(c.flagSet.Arg(0), ":")
	if !ok {
		return fmt.Errorf("%w: %q: want PROVIDER:[DIR]", resolver.ErrInvalidReference, c.flagSet.Arg(0))
	}
	dir = strings.Trim(dir, "/")
	if dir != "" {
		if err := resolver.CheckKey(dir); err != nil {
			return err
		}
	}
	c.enable(provider)
	return c.withResolver(stderr, func(ctx context.Context, r *resolver.Resolver) error {
		names, err := r.List(ctx, provider, dir)
		if errors.Is(err, errors.ErrUnsupported) {
			return fmt.Errorf("provider %s cannot list", provider)
		}
		if err != nil {
			return err
		}
		// Only what the filesystem shows: names a path can reach.
		names = slices.DeleteFunc(names, func(n string) bool { return !resolver.Listable(strings.TrimSuffix(n, "/")) })
		if len(names) == 0 && dir != "" {
			return fmt.Errorf("%s:%s: %w: no such directory", provider, dir, resolver.ErrNotFound)
		}
		slices.Sort(names)
		for _, n := range slices.Compact(names) {
			if _, err := fmt.Fprintln(stdout, n); err != nil {
				return err
			}
		}
		return nil
	})
}

// helpOK turns the --help "error" into success.
func helpOK(err error) error {
	if errors.Is(err, pflag.ErrHelp) {
		return nil
	}
	return err
}
