package sipproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Bounds of the pause before accepting again after the process ran out of
// descriptors or memory for a new connection.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// streamListener serves the TCP or TLS listener to sipgo. It closes the
// connections peers open once they go quiet for the idle timeout (sipgo
// keeps an accepted connection for as long as the peer does), and it
// rides out a shortage of descriptors: sipgo stops serving the listener
// at the first error Accept returns, and the replica would stop with it.
type streamListener struct {
	net.Listener
	transport string
	// idle is the timeout; 0 or less keeps connections however quiet.
	idle       time.Duration
	onIdle     func(net.Conn)
	log        zerolog.Logger
	retryFirst time.Duration

	closeOnce sync.Once
	closed    chan struct{}
}

func newStreamListener(ln net.Listener, transport string, idle time.Duration, onIdle func(net.Conn), log zerolog.Logger) *streamListener {
	return &streamListener{
		Listener:   ln,
		transport:  transport,
		idle:       idle,
		onIdle:     onIdle,
		log:        log,
		retryFirst: acceptRetryMin,
		closed:     make(chan struct{}),
	}
}

func (l *streamListener) Accept() (net.Conn, error) {
	pause := l.retryFirst
	for {
		conn, err := l.Listener.Accept()
		if err == nil {
			if l.idle <= 0 {
				return conn, nil
			}
			return newIdleConn(conn, l.idle, l.onIdle), nil
		}
		if !resourceShortage(err) {
			return nil, err
		}
		l.log.Warn().Err(err).Str("transport", l.transport).Dur("retry_in", pause).Msg("accept connection")
		select {
		case <-l.closed:
			return nil, net.ErrClosed
		case <-time.After(pause):
		}
		pause = min(2*pause, acceptRetryMax)
	}
}

func (l *streamListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// resourceShortage reports the accept errors that pass once connections
// close or memory is freed, as net/http's server treats them.
func resourceShortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// processStart anchors the monotonic clock idleConn counts on.
var processStart = time.Now()

// idleConn ends a connection's reads with io.EOF once nothing has been read
// from it or written to it for timeout: sipgo then closes it as if the peer
// had, and forgets it. Traffic only records the time; the read deadline
// is moved when it expires, so a busy connection costs a clock read per
// read and write and one deadline per timeout.
type idleConn struct {
	net.Conn
	timeout time.Duration
	onIdle  func(net.Conn)
	// lastActive is the time of the last traffic, in nanoseconds since
	// processStart on the monotonic clock.
	lastActive atomic.Int64
	// deadline is the read deadline last set; only the reader touches it.
	deadline time.Time
}

func newIdleConn(conn net.Conn, timeout time.Duration, onIdle func(net.Conn)) *idleConn {
	c := &idleConn{Conn: conn, timeout: timeout, onIdle: onIdle}
	c.touch()
	c.deadline = time.Now().Add(timeout)
	// A connection already gone fails its first read anyway.
	_ = conn.SetReadDeadline(c.deadline)
	return c
}

func (c *idleConn) touch() { c.lastActive.Store(int64(time.Since(processStart))) }

func (c *idleConn) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if n > 0 {
			c.touch()
		}
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		now := time.Now()
		if now.Before(c.deadline) {
			// Not our deadline passing: an error the connection keeps
			// returning (a TLS handshake that timed out). Pass it on.
			return n, err
		}
		quiet := now.Sub(processStart) - time.Duration(c.lastActive.Load())
		if quiet >= c.timeout {
			c.onIdle(c.Conn)
			return n, io.EOF
		}
		c.deadline = now.Add(c.timeout - quiet)
		if err := c.Conn.SetReadDeadline(c.deadline); err != nil {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (c *idleConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.touch()
	}
	return n, err
}
