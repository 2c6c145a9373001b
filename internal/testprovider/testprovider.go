// Package testprovider is a provider for secretfs's own end-to-end tests,
// compiled into the binary only with the build tag secretfs_testing.
//
// It serves the files below a directory: key "a/b" is the file DIR/a/b, and
// listing follows the directory tree. The test changes a value by writing
// the file, takes the backend down by creating DIR/.down (every call then
// fails with resolver.ErrUnavailable) or DIR/.hang (every call then waits
// for its deadline), and makes a call hang until its deadline by reading
// any key below "hang/". Listing a directory below
// "hanglist/" hangs, and below "faillist/" fails as unavailable, while the
// secrets there read as usual. A file "name.secret" beside a directory
// "name" is the value of a secret that is also a directory. While a file
// "name.fail" exists beside it, reading "name" alone fails as unavailable
// (as a program that exits 1 for one key does), and the rest of the
// backend answers.
package testprovider

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/secretfs/secretfs/resolver"
)

// Provider serves files below Dir under the name Name.
type Provider struct {
	ProviderName string
	Dir          string
}

// Name implements resolver.Provider.
func (p *Provider) Name() string { return p.ProviderName }

// down fails a call while DIR/.down exists, and makes it hang until its
// deadline while DIR/.hang does.
func (p *Provider) down(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(p.Dir, ".hang")); err == nil {
		<-ctx.Done()
		return fmt.Errorf("%s: %w: %w", p.ProviderName, resolver.ErrUnavailable, ctx.Err())
	}
	if _, err := os.Stat(filepath.Join(p.Dir, ".down")); err == nil {
		return fmt.Errorf("%s: %w: backend is down", p.ProviderName, resolver.ErrUnavailable)
	}
	return nil
}

// Get implements resolver.Provider.
func (p *Provider) Get(ctx context.Context, key, version string) (resolver.Secret, error) {
	for prefix, d := range map[string]time.Duration{"slow/": time.Second, "slower/": 5 * time.Second} {
		if strings.HasPrefix(key, prefix) {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return resolver.Secret{}, fmt.Errorf("%s %s: %w: %w", p.ProviderName, key, resolver.ErrUnavailable, ctx.Err())
			}
		}
	}
	if strings.HasPrefix(key, "hang/") {
		<-ctx.Done()
		return resolver.Secret{}, fmt.Errorf("%s %s: %w: %w", p.ProviderName, key, resolver.ErrUnavailable, ctx.Err())
	}
	if err := p.down(ctx); err != nil {
		return resolver.Secret{}, err
	}
	path := filepath.Join(p.Dir, filepath.FromSlash(key))
	if _, err := os.Stat(path + ".fail"); err == nil {
		return resolver.Secret{}, fmt.Errorf("%s %s: %w: this key fails", p.ProviderName, key, resolver.ErrUnavailable)
	}
	if version != "" {
		return resolver.Secret{}, fmt.Errorf("%s %s@%s: %w", p.ProviderName, key, version, resolver.ErrNotFound)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path += ".secret"
	}
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		return resolver.Secret{}, fmt.Errorf("%s %s: %w", p.ProviderName, key, resolver.ErrNotFound)
	}
	v, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrPermission) {
		return resolver.Secret{}, fmt.Errorf("%s %s: %w", p.ProviderName, key, resolver.ErrPermission)
	}
	if err != nil {
		return resolver.Secret{}, fmt.Errorf("%s %s: %w", p.ProviderName, key, resolver.ErrNotFound)
	}
	return resolver.Secret{Value: v, Created: st.ModTime()}, nil
}

// List implements resolver.Lister.
func (p *Provider) List(ctx context.Context, dir string) ([]string, error) {
	if err := p.down(ctx); err != nil {
		return nil, err
	}
	switch {
	case dir == "hanglist" || strings.HasPrefix(dir, "hanglist/"):
		<-ctx.Done()
		return nil, fmt.Errorf("%s list %s: %w: %w", p.ProviderName, dir, resolver.ErrUnavailable, ctx.Err())
	case dir == "faillist" || strings.HasPrefix(dir, "faillist/"):
		return nil, fmt.Errorf("%s list %s: %w: listing is broken", p.ProviderName, dir, resolver.ErrUnavailable)
	}
	ents, err := os.ReadDir(filepath.Join(p.Dir, filepath.FromSlash(dir)))
	if err != nil {
		return nil, fmt.Errorf("%s list %s: %w", p.ProviderName, dir, resolver.ErrNotFound)
	}
	var names []string
	for _, e := range ents {
		switch {
		case strings.HasPrefix(e.Name(), "."):
		case e.IsDir():
			names = append(names, e.Name()+"/")
			if _, err := os.Stat(filepath.Join(p.Dir, filepath.FromSlash(dir), e.Name()+".secret")); err == nil {
				names = append(names, e.Name())
			}
		case strings.HasSuffix(e.Name(), ".secret"), strings.HasSuffix(e.Name(), ".fail"):
		default:
			names = append(names, e.Name())
		}
	}
	return names, nil
}
