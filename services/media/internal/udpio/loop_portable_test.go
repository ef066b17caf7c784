//go:build !linux || udpio_portable

package udpio

// removalQueued reports whether a Remove of s from l has marked its reader
// removed, or taken it out: the test's way to know a Remove called
// elsewhere got as far.
func removalQueued(l *Loop, s *Socket) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.readers[s]
	return r == nil || r.removed.Load()
}
