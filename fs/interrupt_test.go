package fs

import (
	"os"
	"testing"
)

func TestFatalPending(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status string
		want   bool
	}{
		{"nothing pending", "Name:\tcat\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n", false},
		{"SIGKILL on the thread", "SigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n", true},
		{"SIGKILL on the process", "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\n", true},
		{"a caught SIGALRM", "SigPnd:\t0000000000002000\nShdPnd:\t0000000000002000\nSigCgt:\t0000000000002000\n", false},
		{"a caught SIGTERM", "SigPnd:\t0000000000004000\nShdPnd:\t0000000000000000\nSigCgt:\t0000000000004000\n", false},
		{"no such lines", "Name:\tcat\n", false},
		{"SIGQUIT by default (a core dump, not made SIGKILL)", "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000004\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n", true},
		{"SIGQUIT caught", "ShdPnd:\t0000000000000004\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000004\n", false},
		{"SIGQUIT blocked", "ShdPnd:\t0000000000000004\nSigBlk:\t0000000000000004\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n", false},
		{"SIGCHLD by default (ignored)", "ShdPnd:\t0000000000010000\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := fatalPending([]byte(tt.status)); got != tt.want {
				t.Errorf("fatalPending(%q) = %v, want %v", tt.status, got, tt.want)
			}
		})
	}
}

func TestDying(t *testing.T) {
	if d, known := dying(uint32(os.Getpid())); d || !known {
		t.Errorf("this test process: dying %v, known %v; want alive and known", d, known)
	}
	if d, known := dying(1 << 30); !d || !known {
		t.Errorf("a thread that does not exist: dying %v, known %v; want dying", d, known)
	}
	if _, known := dying(0); known {
		t.Error("PID 0 (a reader in another PID namespace) is known, want unknown: its interrupt cancels")
	}
}
