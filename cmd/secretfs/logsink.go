package main

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// logSink is the daemon's log as a request sees it: a write never waits.
// Lines go through a buffer to one writer goroutine; a line that finds the
// buffer full (a stderr nobody reads, a stuck disk) is dropped and
// counted, and the next line written says how many were. A FUSE request
// that logs is never held up by its log.
type logSink struct {
	w       io.Writer
	lines   chan []byte
	dropped atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	closed  atomic.Bool
}

// logBuffer is how many lines wait for the writer at most.
const logBuffer = 4096

func newLogSink(w io.Writer) *logSink {
	s := &logSink{w: w, lines: make(chan []byte, logBuffer), stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

// Write queues a copy of p (one log record), or drops it.
func (s *logSink) Write(p []byte) (int, error) {
	if s.closed.Load() {
		s.dropped.Add(1)
		return len(p), nil
	}
	select {
	case s.lines <- append([]byte(nil), p...):
	default:
		s.dropped.Add(1)
	}
	return len(p), nil
}

func (s *logSink) run() {
	defer close(s.done)
	for {
		select {
		case b := <-s.lines:
			s.write(b)
		case <-s.stop:
			for {
				select {
				case b := <-s.lines:
					s.write(b)
				default:
					return
				}
			}
		}
	}
}

func (s *logSink) write(b []byte) {
	if n := s.dropped.Swap(0); n > 0 {
		fmt.Fprintf(s.w, "secretfs: %d log lines dropped: the log's reader did not keep up\n", n)
	}
	s.w.Write(b)
}

// Close writes what is queued, waiting at most within.
func (s *logSink) Close(within time.Duration) {
	if s.closed.Swap(true) {
		return
	}
	close(s.stop)
	select {
	case <-s.done:
	case <-time.After(within):
	}
}
