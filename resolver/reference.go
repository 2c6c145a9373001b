package resolver

import (
	"fmt"
	"strings"
)

// Reference names one secret value: Key in Provider, at Version (empty: the
// current one), cut down to Field (empty: the whole value).
type Reference struct {
	Provider string
	Key      string
	Version  string
	Field    string
}

// Parse parses "PROVIDER:KEY[@VERSION][#FIELD]".
//
// The field starts at the first "#"; the version starts at the last "@"
// before it, unless a "/" follows that "@" (then it is part of the key). A trailing "@" (empty version) is allowed and means the current
// version. The key must be non-empty, must not start or end with "/" and
// must not contain empty, "." or ".." path segments, so that every reference
// also has exactly one path below a mount.
func Parse(s string) (Reference, error) {
	provider, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Reference{}, fmt.Errorf("%w: %q: want PROVIDER:KEY[@VERSION][#FIELD]", ErrInvalidReference, s)
	}
	if err := checkProvider(provider); err != nil {
		return Reference{}, err
	}
	ref, err := ParseKey(rest)
	if err != nil {
		return Reference{}, err
	}
	ref.Provider = provider
	return ref, nil
}

// ParseKey parses "KEY[@VERSION][#FIELD]", the part of a reference after
// "PROVIDER:" (and the part of a path after "/MOUNT/PROVIDER/"). The returned
// Reference has no Provider.
func ParseKey(s string) (Reference, error) {
	var ref Reference
	keyver, field, hasField := strings.Cut(s, "#")
	if hasField {
		if field == "" {
			return Reference{}, fmt.Errorf("%w: %q: empty field after #", ErrInvalidReference, s)
		}
		ref.Field = field
	}
	ref.Key = keyver
	// An "@" followed by a "/" belongs to a directory name, not a version.
	if i := strings.LastIndex(keyver, "@"); i >= 0 && !strings.Contains(keyver[i+1:], "/") {
		ref.Key, ref.Version = keyver[:i], keyver[i+1:]
	}
	if err := CheckKey(ref.Key); err != nil {
		return Reference{}, fmt.Errorf("%w (in %q)", err, s)
	}
	return ref, nil
}

// CheckKey reports whether key can name a secret: non-empty, no leading or
// trailing "/", no empty, "." or ".." segments and no NUL byte.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidReference)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key longer than %d bytes", ErrInvalidReference, MaxKeyLen)
	}
	if strings.ContainsRune(key, 0) {
		return fmt.Errorf("%w: key contains a NUL byte", ErrInvalidReference)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "", ".", "..":
			return fmt.Errorf("%w: key %q has an empty, . or .. segment", ErrInvalidReference, key)
		}
	}
	return nil
}

// CheckProvider reports whether name can name a provider: lower-case
// letters, digits, - and _.
func CheckProvider(name string) error { return checkProvider(name) }

func checkProvider(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty provider name", ErrInvalidReference)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("%w: provider name %q: want lower-case letters, digits, - and _", ErrInvalidReference, name)
		}
	}
	return nil
}

// String formats the reference so that Parse(r.String()) == r for every
// valid reference.
func (r Reference) String() string {
	var b strings.Builder
	b.WriteString(r.Provider)
	b.WriteByte(':')
	b.WriteString(r.KeyString())
	return b.String()
}

// KeyString formats the reference without its provider, as it appears as a
// path below the provider's directory.
func (r Reference) KeyString() string {
	s := r.Key
	// A key that itself contains "@" needs an explicit (possibly empty)
	// version, or Parse would split it.
	if r.Version != "" || strings.Contains(r.Key, "@") {
		s += "@" + r.Version
	}
	if r.Field != "" {
		s += "#" + r.Field
	}
	return s
}

// Validate checks a Reference built by hand rather than by Parse.
func (r Reference) Validate() error {
	if err := checkProvider(r.Provider); err != nil {
		return err
	}
	if err := CheckKey(r.Key); err != nil {
		return err
	}
	if strings.Contains(r.Key, "#") {
		return fmt.Errorf("%w: key %q contains #", ErrInvalidReference, r.Key)
	}
	if len(r.Version) > MaxVersionLen {
		return fmt.Errorf("%w: version longer than %d bytes", ErrInvalidReference, MaxVersionLen)
	}
	if strings.ContainsAny(r.Version, "/#@\x00") {
		return fmt.Errorf("%w: version %q contains /, #, @ or NUL", ErrInvalidReference, r.Version)
	}
	return nil
}

// The longest key (PATH_MAX) and version a reference may hold: no backend
// names longer ones, and what an engine keeps per name stays bounded.
const (
	MaxKeyLen     = 4096
	MaxVersionLen = 256
)

// Listable reports whether a name that a listing returns (without a
// directory's trailing "/") can be shown as a path segment that names it
// again: not empty, ".", ".." or containing "/", "#" or NUL. The filesystem
// and `secretfs ls` leave out the others.
func Listable(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/#\x00")
}
