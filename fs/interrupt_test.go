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
		{"a caught SIGALRM", "SigPnd:\t0000000000002000\nShdPnd:\t0000000000002000\n", false},
		{"SIGTERM not yet made fatal", "SigPnd:\t0000000000004000\nShdPnd:\t0000000000000000\n", false},
		{"no such lines", "Name:\tcat\n", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := fatalPending([]byte(tt.status)); got != tt.want {
				t.Errorf("fatalPending(%q) = %v, want %v", tt.status, got, tt.want)
			}
		})
	}
}

func TestDyingSelfAndGone(t *testing.T) {
	if dying(uint32(os.Getpid())) {
		t.Error("this test process is not dying")
	}
	if !dying(1 << 30) {
		t.Error("a thread that does not exist counts as dying")
	}
}
