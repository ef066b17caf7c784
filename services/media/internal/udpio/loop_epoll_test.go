//go:build linux && !udpio_portable

package udpio

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Sockets on one loop are served one handler at a time; a removed
// socket's descriptor number may be reused by a new socket at once.
func TestSocketsShareTheLoopAndDescriptorsAreReused(t *testing.T) {
	l := newLoop(t)
	c := peer(t)
	for round := range 20 {
		s, err := Listen(loopback)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan byte, 1)
		if err := l.Add(s, HandlerFunc(func(pkt []byte, _ netip.AddrPort, _ time.Time) { got <- pkt[0] })); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDPAddrPort([]byte{byte(round)}, addrOf(s)); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-got:
			if b != byte(round) {
				t.Fatalf("round %d: handler got a datagram of round %d", round, b)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("round %d: nothing delivered", round)
		}
		l.Remove(s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A change queued while the loop is being closed wakes the loop before
// Close can close the eventfd: a wake-up written after that would land in
// whatever file has taken the descriptor number since.
func TestChangeRacingCloseWakesNoOtherFile(t *testing.T) {
	l, err := NewLoop(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := listen(t, loopback)
	closed := make(chan struct{})
	var reused []int
	t.Cleanup(func() {
		for _, fd := range reused {
			_ = unix.Close(fd)
		}
	})
	wake := l.wake
	testHookQueued = func() {
		testHookQueued = nil
		go func() {
			defer close(closed)
			l.Close()
		}()
		select {
		case <-closed:
		case <-time.After(50 * time.Millisecond):
			return // Close waits for the queued change to wake the loop
		}
		// Close got through: take the numbers it freed, as the next file
		// opened anywhere in the process would.
		for range 4 {
			fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			reused = append(reused, fd)
			if fd == wake {
				return
			}
		}
	}
	t.Cleanup(func() { testHookQueued = nil })
	_ = l.Add(s, HandlerFunc(func([]byte, netip.AddrPort, time.Time) {}))
	<-closed
	for _, fd := range reused {
		var counter [8]byte
		if n, err := unix.Read(fd, counter[:]); err == nil {
			t.Fatalf("a loop's wake-up was written to descriptor %d after Close had closed its eventfd (%d bytes)", fd, n)
		}
	}
}

// A socket removed in the middle of a batch that still holds an event for
// it is not read for that event, even once its descriptor number belongs
// to a new socket: what the new socket receives goes to its own handler,
// once it is added, and never to the removed socket's.
func TestStaleEventOfARemovedDescriptorIsSkipped(t *testing.T) {
	l := newLoop(t)
	c := peer(t)
	x, y := listen(t, loopback), listen(t, loopback)
	old, err := Listen(loopback)
	if err != nil {
		t.Fatal(err)
	}
	var stale atomic.Int32
	if err := l.Add(old, HandlerFunc(func([]byte, netip.AddrPort, time.Time) { stale.Add(1) })); err != nil {
		t.Fatal(err)
	}
	// x's handler holds the loop while the next batch gathers: the wake-up
	// for the Remove, then y, then old. y's handler holds it again while
	// old's descriptor is closed and taken by a new socket.
	holdX, holdY := make(chan struct{}), make(chan struct{})
	inX, inY := make(chan struct{}), make(chan struct{})
	if err := l.Add(x, HandlerFunc(func([]byte, netip.AddrPort, time.Time) { close(inX); <-holdX })); err != nil {
		t.Fatal(err)
	}
	if err := l.Add(y, HandlerFunc(func([]byte, netip.AddrPort, time.Time) { close(inY); <-holdY })); err != nil {
		t.Fatal(err)
	}
	send := func(s *Socket, pkt string) {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort([]byte(pkt), addrOf(s)); err != nil {
			t.Fatal(err)
		}
	}
	send(x, "x")
	<-inX
	removed := make(chan struct{})
	go func() {
		defer close(removed)
		l.Remove(old)
	}()
	time.Sleep(5 * time.Millisecond) // the wake-up is ready first
	send(y, "y")
	send(old, "old")
	time.Sleep(5 * time.Millisecond)
	close(holdX)
	<-removed // applied, with y and old still to come in the batch
	fd := old.fd
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := listen(t, loopback)
	if fresh.fd != fd {
		t.Skipf("the new socket got descriptor %d, not the freed %d", fresh.fd, fd)
	}
	send(fresh, "fresh")
	got := make(chan string, 2)
	added := make(chan error, 1)
	go func() {
		added <- l.Add(fresh, HandlerFunc(func(pkt []byte, _ netip.AddrPort, _ time.Time) { got <- string(pkt) }))
	}()
	select {
	case <-inY:
	case <-time.After(2 * time.Second):
		t.Fatal("y's datagram was not handled")
	}
	time.Sleep(5 * time.Millisecond) // the Add is queued
	close(holdY)
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	// The batch with the stale event was over before the Add was applied.
	if n := stale.Load(); n != 0 {
		t.Fatalf("the removed socket's handler ran %d times", n)
	}
	select {
	case pkt := <-got:
		if pkt != "fresh" {
			t.Fatalf("the new socket's handler got %q", pkt)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the new socket's datagram was not handled")
	}
}

// removalQueued reports whether the loop has a Remove of s to make, or
// made it: the test's way to know a Remove called elsewhere got as far.
func removalQueued(l *Loop, s *Socket) bool {
	if s.loop.Load() != l {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.changes {
		for _, r := range c.remove {
			if r == s {
				return true
			}
		}
	}
	return false
}
