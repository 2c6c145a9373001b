package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	"github.com/secretfs/secretfs/resolver"
)

// toErrno maps an error from the resolver to what the kernel is told. What
// is not a plain answer about a secret (backend down, unknown failures) is
// logged; no error here carries a value.
func toErrno(log *slog.Logger, op string, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, resolver.ErrNotFound),
		errors.Is(err, resolver.ErrUnknownProvider),
		errors.Is(err, resolver.ErrInvalidReference):
		return syscall.ENOENT
	case errors.Is(err, resolver.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, errors.ErrUnsupported):
		return syscall.ENOTSUP
	case errors.Is(err, resolver.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		log.Warn("backend unavailable", "op", op, "error", err)
		return syscall.EIO
	default:
		log.Error("unexpected error", "op", op, "error", err)
		return syscall.EIO
	}
}
