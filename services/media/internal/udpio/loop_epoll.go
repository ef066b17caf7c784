//go:build linux && !udpio_portable

package udpio

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxEvents bounds the ready sockets taken per wait; more stay ready for
// the next one.
const maxEvents = 256

// Loop reads the sockets added to it on one goroutine.
type Loop struct {
	epfd      int
	epollFile *os.File        // epfd, registered with the runtime's poller
	poll      syscall.RawConn // waits for epfd to have something ready
	wake      int             // eventfd that interrupts the wait to apply changes

	mu        sync.Mutex
	changes   []*change
	tasks     []task // posted, to run at the next wake-up
	closed    bool
	closeOnce sync.Once

	// Owned by the loop goroutine: what each descriptor is, by number.
	entries  []entry
	ran      []task  // the tasks last run, emptied, for Post to fill next
	drained  [8]byte // where the eventfd is read, not on the stack (see wakeOne)
	readErrs func(error)
	touched  uintptr // what Prefetch returned, kept so the loads stay

	done chan struct{}
}

type entry struct {
	sock     *Socket
	handler  Handler
	prefetch Prefetcher // the handler, when it is one
}

// task is a function posted for a socket.
type task struct {
	sock *Socket
	run  func()
}

type change struct {
	add     *Socket
	handler Handler
	remove  []*Socket
	err     error         // of the add, set by the loop
	applied chan struct{} // closed once the loop has made the change
}

// NewLoop starts an event loop. readErr, when not nil, is told of read
// errors other than an empty socket (a datagram is lost; the loop goes on).
func NewLoop(readErr func(error)) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl add eventfd: %w", err)
	}
	// Non-blocking, so that os.NewFile hands the descriptor to the poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll set non-blocking: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "udpio-epoll")
	poll, err := file.SyscallConn()
	if err != nil {
		_ = unix.Close(wake)
		_ = file.Close()
		return nil, fmt.Errorf("poll epoll set: %w", err)
	}
	if readErr == nil {
		readErr = func(error) {}
	}
	l := &Loop{
		epfd:      epfd,
		epollFile: file,
		poll:      poll,
		wake:      wake,
		readErrs:  readErr,
		done:      make(chan struct{}),
	}
	go l.run()
	return l, nil
}

// Add starts delivering s's datagrams to h. A socket is read by one loop
// at a time: Add refuses one that a loop, this or another, still reads.
// Neither Add nor Remove may be called from a handler: both wait for the
// loop.
func (l *Loop) Add(s *Socket, h Handler) error {
	// Claimed before the change is queued, so that of two Adds of one
	// socket to different loops only one gets it: two epoll sets would
	// both report it, and the loops would run its handler at once.
	if !s.loop.CompareAndSwap(nil, l) {
		return errInLoop
	}
	c := &change{add: s, handler: h, applied: make(chan struct{})}
	if err := l.submit(c); err != nil {
		s.loop.Store(nil)
		return err
	}
	<-c.applied
	return c.err
}

// Remove stops reading the given sockets and returns once the loop will
// not touch them again: no handler of theirs is running or will run. The
// sockets stay open.
func (l *Loop) Remove(socks ...*Socket) {
	c := &change{remove: socks, applied: make(chan struct{})}
	if err := l.submit(c); err != nil {
		// A stopping loop may still be inside a handler: only its end
		// guarantees none of these sockets' handlers runs again.
		<-l.done
		return
	}
	<-c.applied
}

// Post has f run on the loop's goroutine, one at a time with the loop's
// handlers and other tasks, provided s is added to the loop when Post is
// called and still is when f's turn comes: once Remove(s) has returned, no
// task posted for s is running or will run, even if s is added again. Post
// does not wait, and may be called from any goroutine, a handler or a task
// included; after Close it does nothing. Tasks run in the order posted.
//
// It is how code outside the loop (a timer) gets to touch state that only
// s's handler owns. f should be a function value kept for reuse: a
// closure made for each call would allocate, where Post itself does not
// once its queue has grown to the tasks pending at a time.
func (l *Loop) Post(s *Socket, f func()) {
	if s.loop.Load() != l {
		return // not added here: the loop owns nothing of s's
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Again under the lock: apply takes the tasks under it only after it
	// made the changes, so a task let in here meets any Remove of s
	// before it runs, and one posted after that Remove sees it here.
	if l.closed || s.loop.Load() != l {
		return
	}
	l.tasks = append(l.tasks, task{sock: s, run: f})
	// A task queued before this one has woken the loop already, and it
	// takes every task queued by the time it looks. Woken with the lock
	// held, as submit does.
	if len(l.tasks) == 1 {
		l.signal()
	}
}

// testHookQueued, when set, runs once a change is queued and before the
// loop is woken for it.
var testHookQueued func()

func (l *Loop) submit(c *change) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrLoopClosed
	}
	l.changes = append(l.changes, c)
	if testHookQueued != nil {
		testHookQueued()
	}
	// Woken with the lock held: Close has to take it to refuse changes
	// before it can close the eventfd, so a change let in here never
	// writes to a descriptor number that may by then name another file.
	l.signal()
	return nil
}

// wakeOne is what signal adds to the eventfd's counter. Kept here, and
// only ever read, rather than on signal's stack: the race detector's
// instrumentation of the write would move it to the heap on every call.
var wakeOne = [8]byte{1}

// signal interrupts the loop's wait. The eventfd's counter only fails to
// take a write when it is full, which already means a wake-up is pending.
func (l *Loop) signal() {
	_, _ = unix.Write(l.wake, wakeOne[:])
}

// Close stops the loop and waits for it. Sockets still added are not
// closed: they belong to whoever created them.
func (l *Loop) Close() {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.signal()
		<-l.done
		_ = unix.Close(l.wake)
		_ = l.epollFile.Close()
	})
}

// stopped refuses further changes and fails those still queued, once the
// loop has read its last socket.
func (l *Loop) stopped() {
	l.mu.Lock()
	l.closed = true
	pending := l.changes
	l.changes = nil
	l.tasks = nil
	l.mu.Unlock()
	// The sockets it read may go to another loop now.
	for fd := range l.entries {
		if s := l.entries[fd].sock; s != nil {
			s.loop.Store(nil)
		}
		l.entries[fd] = entry{}
	}
	for _, c := range pending {
		if c.add != nil {
			c.add.loop.Store(nil)
		}
		c.err = ErrLoopClosed
		close(c.applied)
	}
	close(l.done)
}

func (l *Loop) run() {
	defer l.stopped()
	var (
		events [maxEvents]unix.EpollEvent
		buf    [MaxDatagram]byte
		rsa    unix.RawSockaddrAny
	)
	// The runtime's poller watches the epoll descriptor itself: the loop
	// parks like any goroutine waiting for I/O while nothing is ready, and
	// drains the set with non-blocking waits while something is. A
	// blocking epoll_wait would instead hold an OS thread in a system call
	// the scheduler has to take the processor back from.
	err := l.poll.Read(func(uintptr) bool {
		for {
			n, errno := epollWaitNow(l.epfd, events[:])
			switch {
			case errno == unix.EINTR:
				continue
			case errno != 0:
				l.readErrs(fmt.Errorf("epoll_wait: %w", errno))
				return false
			case n == 0:
				return false // park until the set has something ready
			}
			// One clock read per batch: the packets of a batch were all
			// queued by the time the wait returned, and a read per packet
			// costs more than the few microseconds it would tell apart.
			at := time.Now()
			if n > 1 {
				l.prefetch(events[:n])
			}
			for i := range n {
				fd := int(events[i].Fd)
				if fd == l.wake {
					if !l.apply() {
						return true
					}
					continue
				}
				if fd >= len(l.entries) || l.entries[fd].sock == nil {
					continue // removed earlier in this batch
				}
				h := l.entries[fd].handler
				size, src, ok, err := recvFrom(fd, buf[:], &rsa)
				if err != nil {
					l.readErrs(err)
					continue
				}
				if ok {
					h.HandleDatagram(buf[:size], src, at)
				}
			}
		}
	})
	if err != nil {
		l.readErrs(fmt.Errorf("wait for the epoll set: %w", err))
	}
}

// prefetch lets the handlers of a batch start loading their state.
func (l *Loop) prefetch(events []unix.EpollEvent) {
	sum := l.touched
	for i := range events {
		if fd := int(events[i].Fd); fd < len(l.entries) {
			if p := l.entries[fd].prefetch; p != nil {
				sum += p.Prefetch()
			}
		}
	}
	l.touched = sum
}

// epollWaitNow collects what is ready without blocking.
func epollWaitNow(epfd int, events []unix.EpollEvent) (int, unix.Errno) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(n), errno
}

// apply makes the queued changes, then runs the tasks posted; it reports
// false when the loop must stop.
func (l *Loop) apply() bool {
	_, _ = unix.Read(l.wake, l.drained[:])
	l.mu.Lock()
	changes := l.changes
	l.changes = nil
	closed := l.closed
	l.mu.Unlock()
	for _, c := range changes {
		if c.add != nil {
			if c.err = l.register(c.add, c.handler); c.err != nil {
				c.add.loop.Store(nil)
			}
		}
		for _, s := range c.remove {
			if s.fd < len(l.entries) && l.entries[s.fd].sock == s {
				_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
				l.entries[s.fd] = entry{}
				s.loop.Store(nil)
			}
		}
		close(c.applied)
	}
	// Taken after the changes are made: a task queued before a Remove was
	// made is checked against it here, and no Add can come in between, so
	// a task never meets its socket added again. A Remove queued later
	// waits for these to have run.
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = l.ran
	l.mu.Unlock()
	for i := range tasks {
		if t := &tasks[i]; !closed && l.reads(t.sock) {
			t.run()
		}
	}
	clear(tasks) // lets go of the functions and sockets
	l.ran = tasks[:0]
	return !closed
}

// reads reports whether the loop reads s.
func (l *Loop) reads(s *Socket) bool {
	return s.fd < len(l.entries) && l.entries[s.fd].sock == s
}

func (l *Loop) register(s *Socket, h Handler) error {
	// Held across the registration so that Close cannot free the
	// descriptor number in between: once closed, the number may name
	// another socket, whose datagrams would come to h.
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.fd >= len(l.entries) {
		l.entries = append(l.entries, make([]entry, s.fd+1-len(l.entries))...)
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(s.fd)}); err != nil {
		return fmt.Errorf("epoll_ctl add socket: %w", err)
	}
	p, _ := h.(Prefetcher)
	l.entries[s.fd] = entry{sock: s, handler: h, prefetch: p}
	return nil
}
