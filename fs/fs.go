package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/secretfs/secretfs/access"
	"github.com/secretfs/secretfs/audit"
	"github.com/secretfs/secretfs/cache"
	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

// Config sets what the filesystem shows. Zero modes take the defaults.
type Config struct {
	UID, GID uint32
	FileMode uint32 // permission bits of files; default 0400
	DirMode  uint32 // permission bits of directories; default 0500
	// DirTimeout is how long the kernel may keep directory entries and
	// attributes. Default 1s. Files are kept for half of their value's
	// remaining freshness instead.
	DirTimeout time.Duration
	// Deadlines bound how long a request waits: each engine call its own
	// budget, and a whole request (a lookup, a readdir, a template's
	// fetch) twice a call's, however many steps it takes.
	Deadlines resolver.Deadlines
	Logger    *slog.Logger
	// Audit, when set, gets one record for every open of a secret: who
	// (uid, gid, pid, program, cgroup), what (the reference and path) and
	// the outcome, never a value. A record that cannot be written fails
	// the open (EIO). It puts the mount in audit mode.
	Audit Auditor
	// Rules set owners and modes per path, and who may open (allow). The
	// mount runs in audit mode when a rule has allow.
	Rules *access.Rules
	// Identities reads callers' programs and cgroups; one is made if nil.
	Identities *access.Identities
	// Templates appear as MOUNT/templates/NAME.
	Templates []*templates.Template
	// Count, when set, is told of every FUSE request that reaches the
	// daemon, by operation (metrics).
	Count func(op string)
	// Locker, when set, keeps every template's render in memory that
	// never reaches swap (--mlock); the engine keeps the secrets so.
	Locker Locker
	// Changed, when set, is told of the values that changed once the
	// kernel was told of them: an open from then on shows the new value
	// (on-change commands). It must not block.
	Changed func([]resolver.Reference)
	// SweepEvery is how often the kernel is asked to forget the names
	// nobody looked up since the last time: the files it still holds then
	// (watched, open) are kept fresh, until it lets go of them. Default
	// DefaultSweepEvery; negative: never.
	SweepEvery time.Duration
}

// DefaultSweepEvery is how often names nobody looked up are let go.
const DefaultSweepEvery = 30 * time.Second

// Locker copies a value into locked memory; the copy is valid while hold
// is reachable (see package locked).
type Locker interface {
	Copy(b []byte) (copy []byte, hold any, err error)
}

// Auditor is where audit records go.
type Auditor interface {
	Write(audit.Record) error
}

// Engine is what the filesystem needs of the cache.
type Engine interface {
	Get(ctx context.Context, ref resolver.Reference) (cache.Value, error)
	List(ctx context.Context, provider, dir string) (*cache.Listing, time.Duration, error)
	Probe(ctx context.Context, provider, dir string) (*cache.Listing, time.Duration, error)
	Prefetch(ctx context.Context, provider string, keys []string) error
	Names() []string
	OnChange(f func(cache.Change))
}

// maxPrefetch bounds how many secrets one directory listing reads ahead.
const maxPrefetch = 200

// fsys is shared by all nodes of one mount.
type fsys struct {
	engine   Engine
	cfg      Config
	log      *slog.Logger
	started  time.Time
	notifier *notifier
	// checkOpens is the audit mode: every open reaches the daemon. It is
	// fixed for the life of the mount (the kernel decides NO_OPEN once).
	checkOpens bool
	policy     atomic.Pointer[policy]
	denialMu   sync.Mutex
	lastDenial struct { // guarded by denialMu
		pid  uint32
		path string
		at   time.Time
	}
	// auditFailed (unix seconds) rate-limits the log of audit failures.
	auditFailed atomic.Int64
}

// NewRoot returns the root node of a secretfs tree.
func NewRoot(e Engine, cfg Config) gofs.InodeEmbedder {
	return &rootNode{sys: newFsys(e, cfg)}
}

func newFsys(e Engine, cfg Config) *fsys {
	if cfg.FileMode == 0 {
		cfg.FileMode = 0o400
	}
	if cfg.DirMode == 0 {
		cfg.DirMode = 0o500
	}
	if cfg.DirTimeout == 0 {
		cfg.DirTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Count == nil {
		cfg.Count = func(string) {}
	}
	if cfg.Identities == nil {
		cfg.Identities = &access.Identities{}
	}
	f := &fsys{engine: e, cfg: cfg, log: cfg.Logger, started: time.Now(), notifier: newNotifier(cfg.Logger),
		checkOpens: cfg.Audit != nil || cfg.Rules.HasAllow()}
	if cfg.SweepEvery == 0 {
		cfg.SweepEvery = DefaultSweepEvery
	}
	f.notifier.sweepEvery = max(cfg.SweepEvery, 0)
	f.notifier.visible = cfg.Changed
	f.policy.Store(f.newPolicy(cfg.Rules))
	e.OnChange(f.notifier.changed)
	return f
}

// AuditMode reports whether a mount with cfg runs in audit mode, where every
// open reaches the daemon.
func AuditMode(cfg Config) bool { return cfg.Audit != nil || cfg.Rules.HasAllow() }

// setRules replaces the rules (a reload). A mount in the fast mode cannot
// take allow rules: the kernel decided NO_OPEN for its life.
func (f *fsys) setRules(rs *access.Rules) error {
	if rs.HasAllow() && !f.checkOpens {
		return errors.New("allow rules need the audit mode, which the kernel fixes per mount: restart to apply them")
	}
	f.policy.Store(f.newPolicy(rs))
	f.notifier.everything() // owners and modes the kernel holds may have changed
	return nil
}

// policy is what the rules decide, as one value a reload replaces whole.
type policy struct {
	rules *access.Rules
	// templates are the owners and modes of the templates' files.
	templates map[*templates.Template]access.Attr
}

// newPolicy works out what rs decide, and logs how each template's owner
// and mode follow from the secrets it reads: a template is no looser than
// any of them, unless a rule for its own path, or its own settings, grant
// more (a widening, logged as such).
func (f *fsys) newPolicy(rs *access.Rules) *policy {
	p := &policy{rules: rs, templates: make(map[*templates.Template]access.Attr, len(f.cfg.Templates))}
	def := access.Attr{UID: f.cfg.UID, GID: f.cfg.GID, Mode: f.cfg.FileMode}
	self := access.Attr{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	for _, t := range f.cfg.Templates {
		a, why, wider := TemplateAttr(rs, t, def, self)
		if why != "" {
			f.log.Info("template owned by secretfs's user, mode 0400", "template", t.Name, "why", why)
		}
		if wider != "" {
			f.log.Warn("template widened beyond the secrets it reads", "template", t.Name, "how", wider)
		}
		p.templates[t] = a
	}
	return p
}

// TemplateAttr is the owner and mode of t's file under rs: no looser than
// any secret it reads (where their owners differ, self's with 0400, and
// why says so), unless a rule for its own path or its own uid, gid or mode
// grant more (wider says what).
func TemplateAttr(rs *access.Rules, t *templates.Template, def, self access.Attr) (a access.Attr, why, wider string) {
	a, why, wider = rs.Own(TemplatePath(t), TemplateInputs(t), def, self)
	b := a.With(t.UID, t.GID, t.Mode)
	if w := access.Wider(b, a, "its own uid, gid or mode"); w != "" {
		wider = w
	}
	return b, why, wider
}

// TemplateInputs are what rules match for the secrets t reads, known from
// its text: each reference's secret, and for KEY@VERSION the secret named
// exactly so too, which a read of it may serve instead.
func TemplateInputs(t *templates.Template) []string {
	var out []string
	for _, ref := range t.Refs() {
		out = append(out, secretPath(ref))
		if ref.Version != "" {
			out = append(out, ref.Provider+"/"+ref.Key+"@"+ref.Version)
		}
	}
	return out
}

// TemplatePath is what rules match for a template's own file.
func TemplatePath(t *templates.Template) string { return "templates/" + t.Name }

// dirGetattr answers a directory's getattr: every directory looks the same.
func (f *fsys) dirGetattr(out *fuse.AttrOut) syscall.Errno {
	f.cfg.Count("getattr")
	f.dirAttr(&out.Attr)
	out.SetTimeout(f.cfg.DirTimeout)
	return 0
}

func (f *fsys) dirAttr(out *fuse.Attr) {
	out.Mode = syscall.S_IFDIR | f.cfg.DirMode
	out.Nlink = 2
	out.Uid, out.Gid = f.cfg.UID, f.cfg.GID
	out.SetTimes(nil, &f.started, &f.started)
}

// secretPath is what rules match: the secret a reference reads, as
// PROVIDER/KEY, whatever name (field, version, "NAME@") reads it.
func secretPath(ref resolver.Reference) string { return ref.Provider + "/" + ref.Key }

// servedPath is what rules match for a file showing s, read for ref: the
// secret actually served, which for KEY@VERSION may be the secret named
// exactly so rather than KEY (where no listing told them apart).
func servedPath(ref resolver.Reference, s resolver.Secret) string {
	if s.Key != "" {
		return ref.Provider + "/" + s.Key
	}
	return secretPath(ref)
}

// fileAttr fills the attributes of a file showing s of the secret at
// secret (see secretPath): owner and mode from the first rule that
// matches, else the global ones; a template's as newPolicy worked out.
func (f *fsys) fileAttr(secret string, tmpl *templates.Template, s resolver.Secret, out *fuse.Attr) {
	p := f.policy.Load()
	a, ok := p.templates[tmpl]
	if !ok {
		a = p.rules.Attr(secret, access.Attr{UID: f.cfg.UID, GID: f.cfg.GID, Mode: f.cfg.FileMode})
	}
	out.Mode = syscall.S_IFREG | a.Mode
	out.Nlink = 1
	out.Uid, out.Gid = a.UID, a.GID
	out.Size = uint64(len(s.Value))
	out.Blocks = (out.Size + 511) / 512
	mtime := f.started
	if !s.Created.IsZero() {
		mtime = s.Created
	}
	out.SetTimes(nil, &mtime, &mtime)
}

// request is the context of one request: no interrupt but a dying
// reader's (see detach), and at most d (Deadlines.RequestFor: the longest
// a reader waits, whatever steps the request takes).
func request(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	dctx, stop := detach(ctx)
	c, cancel := context.WithTimeout(dctx, d)
	return c, func() { cancel(); stop() }
}

// list waits at most a call's budget for the listing of dir.
func (f *fsys) list(ctx context.Context, provider, dir string) (*cache.Listing, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Deadlines.CallFor(provider))
	defer cancel()
	l, _, err := f.engine.List(ctx, provider, dir)
	return l, err
}

// known waits at most a call's budget for what is known of dir without a
// costly listing: for a provider that probes (resolver.Prober), one page
// below it, which may not be complete; for others, its listing.
func (f *fsys) known(ctx context.Context, provider, dir string) (*cache.Listing, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Deadlines.CallFor(provider))
	defer cancel()
	l, _, err := f.engine.Probe(ctx, provider, dir)
	if resolver.KindOf(err) == resolver.KindUnsupported {
		l, _, err = f.engine.List(ctx, provider, dir)
	}
	return l, err
}

// get waits at most a read's budget for the value of ref.
func (f *fsys) get(ctx context.Context, ref resolver.Reference) (cache.Value, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Deadlines.FetchFor(ref))
	defer cancel()
	return f.engine.Get(ctx, ref)
}

// caller is who sent the request in ctx.
func (f *fsys) caller(ctx context.Context) access.Caller {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		// Nobody known: no uid, gid, program or cgroup that a rule lists.
		return access.Caller{UID: math.MaxUint32, GID: math.MaxUint32, ExeErr: errors.New("no caller"), CgroupErr: errors.New("no caller")}
	}
	return f.cfg.Identities.Caller(c.Pid, c.Uid, c.Gid)
}

// gate checks, in audit mode, whether the caller of ctx may see the file at
// path made of the secrets at paths (see access.Rules.Decide) before
// anything of it is fetched or shown: a caller an allow rule denies gets
// EACCES, with a record, at lookup and getattr as at open, and learns no
// size, field or version from stat. In the fast mode the kernel alone
// checks (owner and mode).
func (f *fsys) gate(ctx context.Context, path, ref string, paths []string) syscall.Errno {
	if !f.checkOpens {
		return 0
	}
	who := f.lazyCaller(ctx)
	r, denied, why := f.policy.Load().rules.Decide(paths, who.get)
	if !denied {
		return 0
	}
	if f.deniedAgain(who.c.PID, path) {
		return syscall.EACCES
	}
	rec := audit.Record{Op: "denied", Ref: ref, Path: path, Result: syscall.EACCES.Error(), Rule: r.Name(), Reason: why}
	if errno := f.recordAs(rec, who.c, ctx); errno != 0 {
		return errno
	}
	return syscall.EACCES
}

// deniedAgain reports whether pid was denied path just before (and notes
// this denial otherwise). The kernel asks twice for a name it had, within
// one call (a revalidation, then a lookup of its own): one record is
// written for both.
func (f *fsys) deniedAgain(pid uint32, path string) bool {
	now := time.Now()
	f.denialMu.Lock()
	defer f.denialMu.Unlock()
	d := &f.lastDenial
	if d.pid == pid && pid != 0 && d.path == path && now.Sub(d.at) < sameCall {
		d.pid = 0 // a third is another call
		return true
	}
	d.pid, d.path, d.at = pid, path, now
	return false
}

// sameCall is how close a second denial of one pid and path follows the
// first when the kernel asks twice within one call.
const sameCall = 100 * time.Millisecond

// hiddenFrom returns whether, in audit mode, the caller of ctx is denied
// the secret at a path by an allow rule: a directory listing leaves it out
// for that caller, and reads nothing of it ahead. The caller is read once,
// if a rule asks.
func (f *fsys) hiddenFrom(ctx context.Context) func(path string) bool {
	rs := f.policy.Load().rules
	if !f.checkOpens || !rs.HasAllow() {
		return func(string) bool { return false }
	}
	who := f.lazyCaller(ctx)
	return func(path string) bool {
		_, denied, _ := rs.Decide([]string{path}, who.get)
		return denied
	}
}

// lazyCaller is the caller of a request, read from /proc on first use
// only (and never where no rule asks who it is).
type lazyCaller struct {
	f   *fsys
	ctx context.Context
	c   *access.Caller // nil until read
}

func (f *fsys) lazyCaller(ctx context.Context) *lazyCaller { return &lazyCaller{f: f, ctx: ctx} }

func (l *lazyCaller) get() access.Caller {
	if l.c == nil {
		c := l.f.caller(l.ctx)
		l.c = &c
	}
	return *l.c
}

// guarded reports whether an allow rule governs any of paths: the kernel
// keeps no name or attribute of such a file, so that every caller's stat
// reaches gate.
func (f *fsys) guarded(paths []string) bool {
	rs := f.policy.Load().rules
	if !f.checkOpens || !rs.HasAllow() {
		return false
	}
	for _, p := range paths {
		if r := rs.Match(p); r != nil && r.Allow != nil {
			return true
		}
	}
	return false
}

// record writes rec, with who asked, to the audit trail (if there is one).
// It fails closed: a record that cannot be written is EIO for the request,
// and logged at most once every 10s.
func (f *fsys) record(ctx context.Context, rec audit.Record) syscall.Errno {
	return f.recordAs(rec, nil, ctx)
}

// recordAs is record with the caller already known (nil: read it).
func (f *fsys) recordAs(rec audit.Record, known *access.Caller, ctx context.Context) syscall.Errno {
	if f.cfg.Audit == nil {
		return 0
	}
	var c access.Caller
	if known != nil {
		c = *known
	} else {
		c = f.caller(ctx)
	}
	rec.Time = time.Now()
	rec.UID, rec.GID, rec.PID, rec.Exe, rec.Cgroup = c.UID, c.GID, c.PID, c.Exe, c.Cgroup
	if c.ExeFile.Ino != 0 {
		rec.ExeDev = fmt.Sprintf("%d:%d", unix.Major(c.ExeFile.Dev), unix.Minor(c.ExeFile.Dev))
		rec.ExeIno = c.ExeFile.Ino
	}
	rec.MntNS, rec.OtherMntNS = c.MntNS, c.OtherMntNS
	rec.ExeNotAtPath = c.ExeErr == nil && c.Exe != "" && !c.OtherMntNS && !c.ExeHere
	rec.Delegated, rec.Container = c.Delegated(), c.Container()
	if err := f.cfg.Audit.Write(rec); err != nil {
		now := time.Now().Unix()
		if last := f.auditFailed.Load(); now-last >= 10 && f.auditFailed.CompareAndSwap(last, now) {
			f.log.Error("audit record not written; refusing reads until it can be (fail closed)", "error", err)
		}
		return syscall.EIO
	}
	return 0
}

// readOnly answers as a read-only filesystem does: EROFS to every change
// (the mount is also read-only in the kernel; this answers callers that
// reach the nodes directly), success to fsync (nothing is ever dirty), and
// statfs with the sizes other filesystems give.
type readOnly struct{}

func (readOnly) Fsync(context.Context, gofs.FileHandle, uint32) syscall.Errno { return 0 }

func (readOnly) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = maxName
	return 0
}

// maxName is the longest name a directory holds, as on other filesystems.
const maxName = 255

func (readOnly) Setattr(context.Context, gofs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
func (readOnly) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (readOnly) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (readOnly) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (readOnly) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }
func (readOnly) Rmdir(context.Context, string) syscall.Errno  { return syscall.EROFS }
func (readOnly) Rename(context.Context, string, gofs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}
func (readOnly) Symlink(context.Context, string, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (readOnly) Link(context.Context, gofs.InodeEmbedder, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (readOnly) Setxattr(context.Context, string, []byte, uint32) syscall.Errno { return syscall.EROFS }
func (readOnly) Removexattr(context.Context, string) syscall.Errno              { return syscall.EROFS }
