//go:build linux && !udpio_portable

package udpio

import (
	"sync/atomic"
	"testing"
	"time"
)

// A task posted while the loop has taken a batch holding a Remove of its
// socket and not yet made that Remove must not run, even when the socket
// is added again (after Remove returned) before the next batch: once
// Remove(s) has returned, no task posted for s runs.
//
// The loop is held between taking its queues and making the Remove, and
// again after making it, by Adds of sockets whose lock the test holds
// (register takes it).
func TestTaskPostedWhileRemoveIsMadeNeverRunsAfterReAdd(t *testing.T) {
	l := newLoop(t)
	s, other := listen(t, loopback), listen(t, loopback)
	before, after := listen(t, loopback), listen(t, loopback)
	for _, sock := range []*Socket{s, other} {
		if err := l.Add(sock, nopHandler()); err != nil {
			t.Fatal(err)
		}
	}
	queued := func(n int) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.changes) == n
	}
	waitFor := func(cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatal("timed out")
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	hold := func(sock *Socket) (let func()) {
		sock.mu.Lock()
		var done atomic.Bool
		let = func() {
			if done.CompareAndSwap(false, true) {
				sock.mu.Unlock()
			}
		}
		t.Cleanup(let)
		return let
	}

	release := blockLoop(t, l)
	letBefore, letAfter := hold(before), hold(after)
	added := make(chan error, 2)
	go func() { added <- l.Add(before, nopHandler()) }()
	waitFor(func() bool { return queued(1) })
	removed := make(chan struct{})
	go func() {
		defer close(removed)
		l.Remove(s)
	}()
	waitFor(func() bool { return queued(2) })
	go func() { added <- l.Add(after, nopHandler()) }()
	waitFor(func() bool { return queued(3) })
	release()
	waitFor(func() bool { return queued(0) }) // the loop took the three changes

	var ran atomic.Bool
	l.Post(s, func() { ran.Store(true) }) // Remove(s) is not made yet

	letBefore() // the loop makes the Remove, then waits in register(after)
	<-removed
	readded := make(chan error, 1)
	go func() { readded <- l.Add(s, nopHandler()) }()
	waitFor(func() bool { return queued(1) })
	letAfter()
	for range 2 {
		if err := <-added; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-readded; err != nil {
		t.Fatal(err)
	}
	await(t, l, other)
	if ran.Load() {
		t.Fatal("a task posted before Remove(s) returned ran after s was added again")
	}
}
