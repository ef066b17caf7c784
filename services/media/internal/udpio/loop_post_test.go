package udpio

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// blockLoop adds a socket to l whose handler holds the loop until the
// returned function is called, and returns once it does.
func blockLoop(t *testing.T, l *Loop) (release func()) {
	t.Helper()
	s := listen(t, loopback)
	inside, released := make(chan struct{}), make(chan struct{})
	var once sync.Once
	if err := l.Add(s, HandlerFunc(func([]byte, netip.AddrPort, time.Time) {
		once.Do(func() {
			close(inside)
			<-released
		})
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := peer(t).WriteToUDPAddrPort([]byte("x"), addrOf(s)); err != nil {
		t.Fatal(err)
	}
	<-inside
	var releaseOnce sync.Once
	release = func() { releaseOnce.Do(func() { close(released) }) }
	t.Cleanup(release)
	return release
}

// await posts a task for s, which must be added to l, and returns once it
// ran: every task posted before it has had its turn by then.
func await(t *testing.T, l *Loop, s *Socket) {
	t.Helper()
	ran := make(chan struct{})
	l.Post(s, func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a task posted for an added socket did not run")
	}
}

func nopHandler() Handler { return HandlerFunc(func([]byte, netip.AddrPort, time.Time) {}) }

// Tasks run on the loop one at a time with its handlers, so that they and
// the handlers share state unlocked (the race detector checks it), whoever
// posts them, a handler included.
func TestPostedTasksRunOneAtATimeWithTheHandlers(t *testing.T) {
	const posters, perPoster = 4, 200
	l := newLoop(t)
	s := listen(t, loopback)
	var (
		running  atomic.Int32
		shared   int // the loop's alone: unlocked
		tasksRun int
	)
	done := make(chan struct{})
	enter := func() {
		if running.Add(1) != 1 {
			t.Error("a task ran at once with a handler or another task")
		}
		shared++
	}
	fromHandler := func() { enter(); running.Add(-1) }
	task := func() {
		enter()
		tasksRun++
		if tasksRun == posters*perPoster {
			close(done)
		}
		running.Add(-1)
	}
	if err := l.Add(s, HandlerFunc(func([]byte, netip.AddrPort, time.Time) {
		enter()
		l.Post(s, fromHandler)
		running.Add(-1)
	})); err != nil {
		t.Fatal(err)
	}
	c := peer(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = c.WriteToUDPAddrPort([]byte("x"), addrOf(s))
				time.Sleep(50 * time.Microsecond)
			}
		}
	})
	for range posters {
		wg.Go(func() {
			for range perPoster {
				l.Post(s, task)
			}
		})
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the tasks posted did not all run")
	}
	close(stop)
	wg.Wait()
	l.Remove(s) // after which shared is the test's to read
	if shared < posters*perPoster {
		t.Fatalf("shared state saw %d calls, want at least the %d tasks", shared, posters*perPoster)
	}
}

// A task posted for a socket the loop does not read, or no longer reads
// as it did when the task was posted, never runs.
func TestTaskForASocketNotAddedNeverRuns(t *testing.T) {
	tests := []struct {
		name string
		// post posts f for s on l, a loop that reads another socket,
		// leaving s not added to l as it was when f was posted.
		post func(t *testing.T, l *Loop, s *Socket, f func())
	}{
		{name: "never added", post: func(t *testing.T, l *Loop, s *Socket, f func()) {
			l.Post(s, f)
		}},
		{name: "added to another loop", post: func(t *testing.T, l *Loop, s *Socket, f func()) {
			if err := newLoop(t).Add(s, nopHandler()); err != nil {
				t.Fatal(err)
			}
			l.Post(s, f)
		}},
		{name: "posted after Remove", post: func(t *testing.T, l *Loop, s *Socket, f func()) {
			if err := l.Add(s, nopHandler()); err != nil {
				t.Fatal(err)
			}
			l.Remove(s)
			l.Post(s, f)
		}},
		{name: "posted before Remove, added again since", post: func(t *testing.T, l *Loop, s *Socket, f func()) {
			if err := l.Add(s, nopHandler()); err != nil {
				t.Fatal(err)
			}
			// The task waits behind a handler holding the loop, and the
			// Remove comes before the handler lets go.
			release := blockLoop(t, l)
			l.Post(s, f)
			removed := make(chan struct{})
			go func() {
				defer close(removed)
				l.Remove(s)
			}()
			for !removalQueued(l, s) {
				time.Sleep(100 * time.Microsecond)
			}
			release()
			<-removed
			if err := l.Add(s, nopHandler()); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLoop(t)
			s, other := listen(t, loopback), listen(t, loopback)
			if err := l.Add(other, nopHandler()); err != nil {
				t.Fatal(err)
			}
			var ran atomic.Bool
			tc.post(t, l, s, func() { ran.Store(true) })
			await(t, l, other)
			if ran.Load() {
				t.Fatal("the task ran")
			}
		})
	}
}

// Remove returns only once a task of the socket's that is running has
// finished.
func TestRemoveWaitsForARunningTask(t *testing.T) {
	l := newLoop(t)
	s := listen(t, loopback)
	if err := l.Add(s, nopHandler()); err != nil {
		t.Fatal(err)
	}
	inside, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	l.Post(s, func() {
		close(inside)
		<-release
		finished.Store(true)
	})
	<-inside
	removed := make(chan bool)
	go func() {
		l.Remove(s)
		removed <- finished.Load()
	}()
	for !removalQueued(l, s) {
		time.Sleep(100 * time.Microsecond)
	}
	close(release)
	if !<-removed {
		t.Fatal("Remove returned while the socket's task was running")
	}
}

// Once the loop is closed, Post does nothing, and a Post racing Close
// neither fails nor runs its task after Close returned.
func TestPostAfterCloseDoesNothing(t *testing.T) {
	l, err := NewLoop(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := listen(t, loopback)
	if err := l.Add(s, nopHandler()); err != nil {
		t.Fatal(err)
	}
	var closed, late atomic.Bool
	task := func() {
		if closed.Load() {
			late.Store(true)
		}
	}
	posting := make(chan struct{})
	go func() {
		defer close(posting)
		for range 1000 {
			l.Post(s, task)
		}
	}()
	l.Close()
	closed.Store(true)
	<-posting
	l.Post(s, task)
	if late.Load() {
		t.Fatal("a task ran after Close returned")
	}
}

// Posting a task, and running it, allocates nothing once the queue has
// grown: a timer of every transcoded call posts one per talkspurt.
func TestPostDoesNotAllocate(t *testing.T) {
	l := newLoop(t)
	s := listen(t, loopback)
	if err := l.Add(s, nopHandler()); err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{}, 1)
	task := func() { ran <- struct{}{} }
	postAndWait := func() {
		l.Post(s, task)
		<-ran
	}
	for range 10 {
		postAndWait()
	}
	if n := testing.AllocsPerRun(1000, postAndWait); n != 0 {
		t.Fatalf("%v allocations per task posted and run", n)
	}
}
