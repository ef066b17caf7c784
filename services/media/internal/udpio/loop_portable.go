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
// their handlers.
type Loop struct {
	readErr func(error)

	// Held while a handler or readErr runs. Callers keep the state that
	// the handlers of a loop share unlocked, as on Linux, where one
	// goroutine runs them all.
	handling sync.Mutex

	mu        sync.Mutex
	readers   map[*Socket]*reader
	closed    bool
	closeOnce sync.Once

	done chan struct{} // closed once Close has stopped every reader
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
	return &Loop{readErr: readErr, readers: map[*Socket]*reader{}, done: make(chan struct{})}, nil
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
		l.mu.Unlock()
		stop(readers)
		close(l.done)
	})
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
