// Package logtest holds Buffer, the log sink tests give to an in-process
// server, a child process or a browser: goroutines write to it after the
// test has moved on while the test reads it, so it must be safe for both at
// once. It is a test helper: only tests and test-helper packages import it.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer safe for writers and readers at once. Its zero
// value keeps everything; Tail or Head bound what it keeps, so that a
// runaway log does not eat memory (Head) or a test that measures a server's
// heap does not measure its own log (Tail).
type Buffer struct {
	// Tail, when set, keeps only about the last Tail bytes.
	Tail int
	// Head, when set, keeps only the first Head bytes (about: a write that
	// starts below Head is kept whole).
	Head int

	mu     sync.Mutex
	b      bytes.Buffer
	notify chan struct{}
}

// Write appends p (or drops it past Head) and wakes a reader waiting on
// Changed. It never fails.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.notify == nil {
		s.notify = make(chan struct{}, 1)
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	if s.Head > 0 && s.b.Len() > s.Head {
		return len(p), nil
	}
	n, err := s.b.Write(p)
	if s.Tail > 0 && s.b.Len() > 2*s.Tail {
		s.b.Next(s.b.Len() - s.Tail) // the buffer reuses the freed front
	}
	return n, err
}

// String is what the buffer holds.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Changed is ready after a Write since the last receive from it, so a test
// waiting for a line sleeps until there is something new to look at.
func (s *Buffer) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.notify == nil {
		s.notify = make(chan struct{}, 1)
	}
	return s.notify
}
