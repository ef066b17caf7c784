//go:build !linux || udpio_portable

package udpio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Loop serves the sockets added to it, one handler at a time. Each socket
// is read by a goroutine of its own, and the goroutines take turns to run
// their handlers, with one more that runs the tasks posted (Post).
type Loop struct {
	readErr func(error)

	// Held while a handler, a task or readErr runs. Callers keep the
	// state that the handlers of a loop share unlocked, as on Linux,
	// where one goroutine runs them all.
	handling sync.Mutex

	mu        sync.Mutex
	readers   map[*Socket]*reader
	tasks     []task // posted, for the task goroutine to run
	closed    bool
	closeOnce sync.Once

	// The goroutine that runs the tasks posted: woken by posted, stopped
	// by quit, tasksEnded once it has.
	posted     chan struct{}
	quit       chan struct{}
	tasksEnded chan struct{}
	ran        []task // the tasks it last ran, emptied, for Post to fill next

	done chan struct{} // closed once Close has stopped every reader
}

// task is a function posted for a socket, with the reader of the socket
// it was posted under: a task outlives neither.
type task struct {
	r   *reader
	run func()
}

// reader is the goroutine that reads one socket of a loop.
type reader struct {
	sock    *Socket
	handler Handler
	removed atomic.Bool   // set before the read is interrupted
	ended   chan struct{} // closed when the goroutine returns
}

// NewLoop starts an event loop. readErr, when not nil, is told of read
// errors (a datagram is lost; the loop goes on).
func NewLoop(readErr func(error)) (*Loop, error) {
	if readErr == nil {
		readErr = func(error) {}
	}
	l := &Loop{
		readErr:    readErr,
		readers:    map[*Socket]*reader{},
		posted:     make(chan struct{}, 1),
		quit:       make(chan struct{}),
		tasksEnded: make(chan struct{}),
		done:       make(chan struct{}),
	}
	go l.runTasks()
	return l, nil
}

// Add starts delivering s's datagrams to h. A socket is read by one loop
// at a time: Add refuses one that a loop, this or another, still reads.
// Neither Add nor Remove may be called from a handler, as on Linux, where
// both wait for the loop.
func (l *Loop) Add(s *Socket, h Handler) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrLoopClosed
	}
	if !s.inLoop.CompareAndSwap(false, true) {
		return errInLoop
	}
	if s.closed.Load() {
		s.inLoop.Store(false)
		return ErrClosed
	}
	// The Remove that took the socket out of a loop before left its read
	// deadline in the past.
	if err := s.conn.SetReadDeadline(time.Time{}); err != nil {
		s.inLoop.Store(false)
		return fmt.Errorf("add udp socket: %w", err)
	}
	r := &reader{sock: s, handler: h, ended: make(chan struct{})}
	l.readers[s] = r
	go l.read(r)
	return nil
}

// Remove stops reading the given sockets and returns once the loop will
// not touch them again: no handler of theirs is running or will run. The
// sockets stay open.
func (l *Loop) Remove(socks ...*Socket) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		// A closing loop may still be inside a handler: only the end of
		// Close guarantees none of these sockets' handlers runs again.
		<-l.done
		return
	}
	// The readers stay listed until they have ended, so that a Remove of
	// the same socket that comes meanwhile waits for them as well.
	var removing []*reader
	for _, s := range socks {
		if r, ok := l.readers[s]; ok {
			removing = append(removing, r)
		}
	}
	l.mu.Unlock()
	stop(removing)
	if len(removing) > 0 {
		// A task of theirs that took the loop before they were marked
		// removed may still be running, and Remove returns only after it;
		// any task later finds them removed.
		l.handling.Lock()
		l.handling.Unlock()
	}
	l.mu.Lock()
	for _, r := range removing {
		if l.readers[r.sock] == r {
			delete(l.readers, r.sock)
		}
	}
	l.mu.Unlock()
}

// Close stops the loop and waits for it. Sockets still added are not
// closed: they belong to whoever created them.
func (l *Loop) Close() {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		readers := make([]*reader, 0, len(l.readers))
		for _, r := range l.readers {
			readers = append(readers, r)
		}
		l.readers = nil
		l.tasks = nil
		l.mu.Unlock()
		stop(readers)
		close(l.quit)
		<-l.tasksEnded
		close(l.done)
	})
}

// Post has f run on the loop, one at a time with the loop's handlers and
// other tasks, provided s is added to the loop when Post is called and
// still is when f's turn comes: once Remove(s) has returned, no task
// posted for s is running or will run, even if s is added again. Post
// does not wait, and may be called from any goroutine, a handler or a task
// included; after Close it does nothing. Tasks run in the order posted.
//
// It is how code outside the loop (a timer) gets to touch state that only
// s's handler owns. f should be a function value kept for reuse: a
// closure made for each call would allocate, where Post itself does not
// once its queue has grown to the tasks pending at a time.
func (l *Loop) Post(s *Socket, f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.readers[s] // nil once closed
	if r == nil || r.removed.Load() {
		return
	}
	l.tasks = append(l.tasks, task{r: r, run: f})
	select {
	case l.posted <- struct{}{}:
	default: // a wake-up is pending, and takes this task too
	}
}

// runTasks runs what is posted, each holding the loop as a handler does.
func (l *Loop) runTasks() {
	defer close(l.tasksEnded)
	for {
		select {
		case <-l.quit:
			return
		case <-l.posted:
		}
		l.mu.Lock()
		tasks := l.tasks
		l.tasks = l.ran
		l.mu.Unlock()
		for i := range tasks {
			l.handling.Lock()
			// Remove marks a reader removed before it waits for the loop.
			if t := &tasks[i]; !t.r.removed.Load() {
				t.run()
			}
			l.handling.Unlock()
		}
		clear(tasks) // lets go of the functions and readers
		l.ran = tasks[:0]
	}
}

// stop ends the readers and waits for them.
func stop(readers []*reader) {
	for _, r := range readers {
		// Only the first stop of a reader touches the socket: by the time
		// a later one comes, the socket may be read by another loop.
		if r.removed.CompareAndSwap(false, true) {
			// Interrupts the read without closing the socket. It fails
			// only on a closed socket, whose read has failed anyway.
			_ = r.sock.conn.SetReadDeadline(time.Unix(1, 0))
		}
	}
	for _, r := range readers {
		<-r.ended
	}
}

func (l *Loop) read(r *reader) {
	defer close(r.ended)
	// Before ended: once Remove returns, the socket may be added again.
	defer r.sock.inLoop.Store(false)
	// One byte more than the largest datagram taken, so that a longer one,
	// which the read would cut short without saying so, shows by filling it.
	buf := make([]byte, MaxDatagram+1)
	for {
		n, src, err := r.sock.conn.ReadFromUDPAddrPort(buf)
		at := time.Now()
		// A deadline only ever expires once the reader is removed.
		if r.removed.Load() || errors.Is(err, net.ErrClosed) {
			return
		}
		l.handling.Lock()
		switch {
		case r.removed.Load():
			// Removed while another socket's handler held the loop.
		case err != nil:
			l.readErr(fmt.Errorf("read udp socket: %w", err))
		case n > MaxDatagram:
			l.readErr(ErrTruncated)
		default:
			r.handler.HandleDatagram(buf[:n], sourceAddr(src), at)
		}
		l.handling.Unlock()
	}
}

// sourceAddr is a sender's address as the epoll implementation gives it:
// IPv4 senders to a dual-stack socket as IPv4 rather than v4-mapped, and
// no zone, so that a source compares equal to an address learnt from
// signalling.
func sourceAddr(src netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(src.Addr().Unmap().WithZone(""), src.Port())
}
