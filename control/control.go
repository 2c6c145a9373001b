// Package control is the control socket of a running mount: `secretfs
// status MOUNTPOINT` and `secretfs refresh MOUNTPOINT REF...` talk to it.
//
// The socket is a unix socket of mode 0600, owned by the mounting user,
// under /run/secretfs for root and $XDG_RUNTIME_DIR/secretfs otherwise, with
// a name derived from the mountpoint. A connection carries one JSON request
// and one JSON response. Neither ever carries a secret value.
package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is where the sockets of a user live: /run/secretfs for root,
// $XDG_RUNTIME_DIR/secretfs otherwise. It fails for a user with no runtime
// directory.
func Dir(uid int, runtimeDir string) (string, error) {
	if uid == 0 {
		return "/run/secretfs", nil
	}
	if runtimeDir == "" {
		return "", errors.New("XDG_RUNTIME_DIR is not set")
	}
	return filepath.Join(runtimeDir, "secretfs"), nil
}

// Name is the socket's file name for a mountpoint (an absolute path): the
// path made readable, and a hash of it so that no two mountpoints share one.
func Name(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	readable := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_':
			return r
		}
		return '-'
	}, strings.Trim(mountpoint, "/"))
	if len(readable) > 48 {
		readable = readable[len(readable)-48:]
	}
	return readable + "-" + hex.EncodeToString(sum[:4]) + ".sock"
}

// Path is the socket of mountpoint for the current user.
func Path(mountpoint string) (string, error) {
	real, err := Resolve(mountpoint)
	if err != nil {
		return "", err
	}
	dir, err := Dir(os.Getuid(), os.Getenv("XDG_RUNTIME_DIR"))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, Name(real)), nil
}

// Resolve returns the absolute path p names as the kernel resolves it
// (every symlink, and ".." after the link it follows), without asking the
// filesystem mounted there: the path is opened O_PATH, which reads no
// attributes (a mount whose daemon is stopped never answers a stat), and
// the kernel says where the descriptor is. A path that does not exist is
// returned as named. A mount resolves its mountpoint once, at start, with
// it; status and refresh find the mount by any path that resolves to the
// same.
func Resolve(p string) (string, error) {
	abs := p
	if !filepath.IsAbs(p) {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		abs = wd + "/" + p // not cleaned: ".." is the kernel's to resolve
	}
	fd, err := unix.Open(abs, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return filepath.Clean(abs), nil
	}
	defer unix.Close(fd)
	return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// Status is what `secretfs status` shows.
type Status struct {
	Version    string           `json:"version"`
	Mountpoint string           `json:"mountpoint"`
	Started    time.Time        `json:"started"`
	Mode       string           `json:"mode"` // fast or audit
	Providers  []ProviderStatus `json:"providers"`
	Cache      CacheStatus      `json:"cache"`
	VmLck      string           `json:"vmlck"` // locked memory (--mlock), from /proc/self/status
}

// ProviderStatus is one provider's health.
type ProviderStatus struct {
	Name      string    `json:"name"`
	Up        bool      `json:"up"`
	LastError string    `json:"last_error,omitempty"` // a kind of error, never its text
	Since     time.Time `json:"since,omitzero"`
}

// CacheStatus counts what the cache holds and did.
type CacheStatus struct {
	Values    int    `json:"values"`
	Negatives int    `json:"negatives"`
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Stale     uint64 `json:"stale"`
	Calls     uint64 `json:"backend_calls"`
}

// Handler is what the daemon answers with.
type Handler interface {
	Status() Status
	// Refresh drops and re-fetches the references (PROVIDER:KEY... or
	// PROVIDER:DIR/ for a directory) and tells the kernel.
	Refresh(ctx context.Context, refs []string) error
}

type request struct {
	Op   string   `json:"op"`
	Refs []string `json:"refs,omitempty"`
	// Accept asks for a first answer at once ({"accepted":true}) before the
	// refresh's result; a client that does not ask gets the result alone.
	Accept bool `json:"accept,omitempty"`
}

type response struct {
	// Accepted comes first for a refresh: the daemon answers and works on it.
	Accepted bool    `json:"accepted,omitempty"`
	Status   *Status `json:"status,omitempty"`
	Error    string  `json:"error,omitempty"`
}

// Server is a listening control socket.
type Server struct {
	ln   net.Listener
	path string
	done chan struct{}
}

// Listen serves h on the socket at path until Close. A socket left over
// from a daemon that died is replaced.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The directory must be this user's alone: a socket in a directory
	// others may write could be replaced under us.
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, err
	}
	if st.Uid != uint32(os.Getuid()) || st.Mode&0o022 != 0 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("control socket directory %s: not a directory of this user's that only it may write", dir)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another daemon answers on it", path)
	}
	os.Remove(path)
	old := unix.Umask(0o177) // the socket is 0600 from the start
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{ln: ln, path: path, done: make(chan struct{})}
	go s.serve(h, log)
	return s, nil
}

func (s *Server) serve(h Handler, log *slog.Logger) {
	defer close(s.done)
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Minute))
			var req request
			var resp response
			if err := json.NewDecoder(conn).Decode(&req); err != nil {
				resp.Error = "bad request: " + err.Error()
			} else {
				switch req.Op {
				case "status":
					st := h.Status()
					resp.Status = &st
				case "refresh":
					// Accepted at once: the client knows the daemon answers
					// and then waits for the backend calls.
					if req.Accept {
						json.NewEncoder(conn).Encode(response{Accepted: true})
					}
					ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
					if err := h.Refresh(ctx, req.Refs); err != nil {
						resp.Error = err.Error()
					}
					cancel()
					log.Info("refresh on request", "refs", strings.Join(req.Refs, " "), "error", resp.Error)
				default:
					resp.Error = fmt.Sprintf("unknown request %q", req.Op)
				}
			}
			json.NewEncoder(conn).Encode(resp)
		}()
	}
}

// Path is where it listens.
func (s *Server) Path() string { return s.path }

// Close stops listening and removes the socket.
func (s *Server) Close() {
	s.ln.Close()
	<-s.done
	os.Remove(s.path)
}

// ErrNotMounted: nothing answers on the mountpoint's socket.
var ErrNotMounted = errors.New("no secretfs is mounted there")

// answerWithin is how long a daemon has to answer status, or to accept a
// refresh: one that is stopped (SIGSTOP) or stuck never does.
const answerWithin = 2 * time.Second

func call(mountpoint string, req request) (response, error) {
	path, err := Path(mountpoint)
	if err != nil {
		return response{}, err
	}
	conn, err := net.DialTimeout("unix", path, answerWithin)
	if err != nil {
		return response{}, fmt.Errorf("%s: %w (no control socket at %s)", mountpoint, ErrNotMounted, path)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(answerWithin))
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return response{}, noAnswer(mountpoint, err)
	}
	dec := json.NewDecoder(conn)
	var resp response
	if err := dec.Decode(&resp); err != nil {
		return response{}, noAnswer(mountpoint, err)
	}
	if resp.Accepted {
		// A refresh the daemon took on: its backend calls have their own
		// budget, within the daemon's 50 s.
		conn.SetDeadline(time.Now().Add(time.Minute))
		resp = response{}
		if err := dec.Decode(&resp); err != nil {
			return response{}, fmt.Errorf("control socket: %w", err)
		}
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// ErrNoAnswer: a daemon has the mountpoint's socket but does not answer.
var ErrNoAnswer = errors.New("the daemon does not answer (stopped or stuck?)")

func noAnswer(mountpoint string, err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s: %w within %v", mountpoint, ErrNoAnswer, answerWithin)
	}
	return fmt.Errorf("control socket: %w", err)
}

// GetStatus asks the mount at mountpoint for its status.
func GetStatus(mountpoint string) (Status, error) {
	resp, err := call(mountpoint, request{Op: "status"})
	if err != nil {
		return Status{}, err
	}
	if resp.Status == nil {
		return Status{}, errors.New("control socket: no status in the answer")
	}
	return *resp.Status, nil
}

// Refresh asks the mount at mountpoint to drop and re-fetch refs now.
func Refresh(mountpoint string, refs []string) error {
	_, err := call(mountpoint, request{Op: "refresh", Refs: refs, Accept: true})
	return err
}
