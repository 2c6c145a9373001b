package fs

import (
	"log/slog"
	"syscall"

	"github.com/secretfs/secretfs/resolver"
)

// toErrno maps an error to what the kernel is told, by its kind (see
// resolver.KindOf). What is not a plain answer about a secret (backend
// down, unknown failures) is logged; no error here carries a value.
func toErrno(log *slog.Logger, op string, err error) syscall.Errno {
	switch resolver.KindOf(err) {
	case resolver.KindOK:
		return 0
	case resolver.KindNotFound, resolver.KindInvalid:
		return syscall.ENOENT
	case resolver.KindPermission:
		return syscall.EACCES
	case resolver.KindCanceled:
		return syscall.EINTR
	case resolver.KindUnsupported:
		return syscall.ENOTSUP
	case resolver.KindUnavailable:
		log.Warn("backend unavailable", "op", op, "error", err)
		return syscall.EIO
	default:
		log.Error("unexpected error", "op", op, "error", err)
		return syscall.EIO
	}
}
