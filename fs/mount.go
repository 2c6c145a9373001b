package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"

	"github.com/secretfs/secretfs/access"
)

// MountOptions are the kernel-facing choices of a mount.
type MountOptions struct {
	// AllowOther lets users other than the mounting one in. It always comes
	// with default_permissions, so the kernel enforces owner and mode. (A
	// mount without it admits only the mounting user.)
	AllowOther bool
	// Debug logs every FUSE request (names, never contents) to stderr.
	Debug bool
}

// Server is a mounted secretfs.
type Server struct {
	sys   *fsys
	srv   *fuse.Server
	dir   string
	mntID uint64        // the kernel's ID of this mount (0: unknown)
	done  chan struct{} // closed when the filesystem is unmounted
}

// Mount mounts a secretfs tree at dir, read-only, and returns once the
// kernel answers requests. A dir left over from a daemon that died
// ("transport endpoint is not connected") is unmounted first; a dir that a
// live secretfs serves is refused.
func Mount(dir string, e Engine, cfg Config, mo MountOptions) (*Server, error) {
	if err := CleanStale(dir); err != nil {
		return nil, err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("mountpoint: %w", err)
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil && mountedSecretfs(absPath(real)) {
		return nil, fmt.Errorf("mountpoint %s: a secretfs is mounted there already; unmount it first", dir)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mountpoint %s: not a directory", dir)
	}
	root := &rootNode{sys: newFsys(e, cfg)}
	opts := []string{"ro"}
	if mo.AllowOther {
		opts = append(opts, "default_permissions")
	}
	negative := time.Duration(0) // the cache keeps not-found answers, not the kernel
	srv, err := gofs.Mount(dir, root, &gofs.Options{
		MountOptions: fuse.MountOptions{
			FsName:           "secretfs",
			Name:             "secretfs",
			AllowOther:       mo.AllowOther,
			Options:          opts,
			DirectMount:      true,
			DirectMountFlags: syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY,
			DisableXAttrs:    true,
			// READDIRPLUS would look up (read) every secret of a directory
			// that is only listed.
			DisableReadDirPlus: true,
			// A node's bytes never change (a new value is a new inode), so
			// the kernel may keep its pages until the inode goes.
			ExplicitDataCacheControl: true,
			Debug:                    mo.Debug,
		},
		NegativeTimeout:   &negative,
		RootStableAttr:    &gofs.StableAttr{Ino: 1, Mode: syscall.S_IFDIR},
		FirstAutomaticIno: 2, // 1 is the root; small numbers suit 32-bit stat callers
		UID:               cfg.UID,
		GID:               cfg.GID,
	})
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	// go-fuse opens /dev/fuse without close-on-exec: every program the
	// daemon runs (a render worker, an exec provider) would hold the
	// mount's channel, and could answer its requests. Nothing has run
	// since the open.
	if err := closeOnExec("/dev/fuse"); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	s := &Server{sys: root.sys, srv: srv, dir: dir, done: make(chan struct{})}
	if err := srv.WaitMount(); err == nil {
		s.mntID, _ = mountID(dir)
	}
	root.sys.notifier.dir = dir
	// The mount's device, for retire. statx asking for the mount ID alone
	// sends the daemon nothing, so the kernel caches no attribute of the
	// root (a dead mount's next stat must still say so).
	var rst unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &rst); err == nil && rst.Ino == 1 {
		root.sys.notifier.dev = unix.Mkdev(rst.Dev_major, rst.Dev_minor)
	}
	go root.sys.notifier.run(s.done)
	go func() { srv.Wait(); close(s.done) }()
	return s, nil
}

// SetRules replaces the access rules (a reload). Allow rules on a mount in
// the fast mode are refused: they need a restart.
func (s *Server) SetRules(rs *access.Rules) error { return s.sys.setRules(rs) }

// Wait blocks until the filesystem is unmounted.
func (s *Server) Wait() { <-s.done }

// Unmount unmounts the filesystem at the path it was mounted on, never
// following a symlink there (the mountpoint is resolved once, before the
// mount). When it is busy (a process has a file open or its cwd inside),
// it is detached lazily: it disappears from the namespace now and goes
// away when the last user lets go. Either way the kernel ends the
// connection, and Wait returns.
func (s *Server) Unmount() error {
	var err error
	dir := s.dir
	if os.Geteuid() == 0 {
		// The path may no longer lead to this mount (a directory above it
		// renamed, or replaced by a symlink): unmount the mount itself,
		// found by its ID, never what the path leads to now.
		if dir, err = s.where(); err != nil || dir == "" {
			return err // gone already, or not to be found
		}
		// Not go-fuse's Unmount: it follows a symlink at the path, and
		// then waits for a connection that another unmount never ends.
		err = unix.Unmount(dir, unix.UMOUNT_NOFOLLOW)
	} else {
		err = s.srv.Unmount() // fusermount3, which does not follow links either
	}
	if err == nil {
		return nil
	}
	if lerr := lazyUnmount(dir); lerr != nil {
		return fmt.Errorf("unmount %s: %w (lazy unmount: %v)", dir, err, lerr)
	}
	return nil
}

// where returns the path this mount is at now: its mountpoint while that
// still leads to it, else where the kernel lists its ID; "" when it is
// gone.
func (s *Server) where() (string, error) {
	if s.mntID == 0 {
		return s.dir, nil
	}
	if id, err := mountID(s.dir); err == nil && id == s.mntID {
		return s.dir, nil
	}
	mounts, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return i.ID != int(s.mntID), i.ID == int(s.mntID)
	})
	if err != nil {
		return "", fmt.Errorf("unmount %s: finding the mount: %w", s.dir, err)
	}
	if len(mounts) == 0 {
		return "", nil
	}
	return mounts[0].Mountpoint, nil
}

// mountID returns the kernel's ID of the mount at path (not following a
// symlink there).
func mountID(path string) (uint64, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
		return 0, err
	}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("statx: no mount ID")
	}
	return st.Mnt_id, nil
}

// staleCheck bounds the stat that finds a dead mount: a daemon that is
// stopped (SIGSTOP) never answers it.
const staleCheck = 2 * time.Second

// stats runs one stat of a mountpoint at a time: a check of a mount that
// hangs waits on the stat already under way instead of starting another
// (each would hold a thread for as long as the mount hangs).
var stats singleflight.Group

// StatWithin stats dir, giving up when ctx ends: a mount whose daemon is
// stopped or stuck never answers. The stat's own error is returned as is.
func StatWithin(ctx context.Context, dir string) error {
	res := stats.DoChan(dir, func() (any, error) { _, err := os.Stat(dir); return nil, err })
	select {
	case r := <-res:
		return r.Err
	case <-ctx.Done():
		return fmt.Errorf("%s does not answer: %w", dir, ctx.Err())
	}
}

// Answers reports whether the daemon that serves the mount at dir answers
// a request within ctx: a lookup of a name that is never there, which the
// kernel never answers from its cache (a stat of dir itself may be).
func Answers(ctx context.Context, dir string) error {
	err := StatWithin(ctx, filepath.Join(dir, ".secretfs-probe"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		return fmt.Errorf("%s: not a secretfs mount", dir)
	}
	return err
}

// CleanStale unmounts dir if it is a mount whose daemon is gone. It does
// nothing to a healthy directory, and gives up on one that does not answer.
func CleanStale(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), staleCheck)
	defer cancel()
	err := StatWithin(ctx, dir)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("mountpoint %s does not answer within %v: is the daemon that serves it stopped? (unmount it with umount -l)", dir, staleCheck)
	}
	if !errors.Is(err, syscall.ENOTCONN) {
		return nil
	}
	if err := lazyUnmount(dir); err != nil {
		return fmt.Errorf("clean up stale mount %s: %w", dir, err)
	}
	return nil
}

func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// mountedSecretfs reports whether dir is the mountpoint of a secretfs.
func mountedSecretfs(dir string) bool {
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		return false
	}
	for _, m := range mounts {
		if m.FSType == "fuse.secretfs" {
			return true
		}
	}
	return false
}

// lazyUnmount detaches the mount at dir, never one a symlink there points
// to.
func lazyUnmount(dir string) error {
	err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	if err == nil || errors.Is(err, syscall.EINVAL) { // EINVAL: not mounted (any more)
		return nil
	}
	// Not root: fusermount3 may unmount what this user mounted.
	for _, bin := range []string{"fusermount3", "fusermount"} {
		if path, lerr := exec.LookPath(bin); lerr == nil {
			if out, ferr := exec.Command(path, "-u", "-z", dir).CombinedOutput(); ferr != nil {
				return fmt.Errorf("%w; %s: %v: %s", err, bin, ferr, out)
			}
			return nil
		}
	}
	return err
}

// Mounted reports whether dir is the mountpoint of a secretfs.
func Mounted(dir string) bool { return mountedSecretfs(dir) }

// Detach unmounts dir lazily: files still open there are served until
// they are closed.
func Detach(dir string) error { return lazyUnmount(dir) }

// closeOnExec sets close-on-exec on every descriptor of the process open
// on path.
func closeOnExec(path string) error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || target != path {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return fmt.Errorf("close-on-exec on %s: %w", path, err)
		}
	}
	return nil
}
