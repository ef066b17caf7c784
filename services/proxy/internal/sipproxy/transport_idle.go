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
// keeps an accepted connection for as long as the peer does), and those
// that deliver no complete SIP message within the first-message timeout
// of their accept (a TLS handshake that never ends delivers none); and it
// rides out a shortage of descriptors: sipgo stops serving the listener
// at the first error Accept returns, and the replica would stop with it.
type streamListener struct {
	net.Listener
	transport  string
	timeouts   streamTimeouts
	log        zerolog.Logger
	retryFirst time.Duration

	// awaiting holds the accepted connections no message has come over
	// yet, by remote address, as sipgo names a message's source;
	// awaitingCount lets the far more common message over a connection
	// past its first skip the map.
	awaiting      sync.Map
	awaitingCount atomic.Int64

	closeOnce sync.Once
	closed    chan struct{}
}

// streamTimeouts are the bounds on an accepted connection; 0 or less is
// no bound.
type streamTimeouts struct {
	idle   time.Duration
	onIdle func(net.Conn)
	// firstMessage bounds the time from accept to the first complete SIP
	// message; onNoFirstMessage is told of each connection it closes.
	firstMessage     time.Duration
	onNoFirstMessage func(net.Conn)
}

func newStreamListener(ln net.Listener, transport string, timeouts streamTimeouts, log zerolog.Logger) *streamListener {
	return &streamListener{
		Listener:   ln,
		transport:  transport,
		timeouts:   timeouts,
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
			return l.guard(conn), nil
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

// guard wraps an accepted connection in the timeouts that apply to it.
func (l *streamListener) guard(conn net.Conn) net.Conn {
	t := l.timeouts
	if t.idle <= 0 && t.firstMessage <= 0 {
		return conn
	}
	c := newIdleConn(conn, t.idle, t.onIdle)
	if t.firstMessage > 0 {
		remote := conn.RemoteAddr().String()
		l.awaiting.Store(remote, c)
		l.awaitingCount.Add(1)
		c.awaitFirstMessage(t.firstMessage, t.onNoFirstMessage, func() { l.forget(remote, c) })
	}
	return c
}

// messageFrom records that a complete SIP message came from remote, over a
// connection of this listener or any other of its transport: one still
// waiting for its first is no longer bound by the first-message timeout.
func (l *streamListener) messageFrom(remote string) {
	if l.awaitingCount.Load() == 0 {
		return
	}
	if v, ok := l.awaiting.LoadAndDelete(remote); ok {
		l.awaitingCount.Add(-1)
		v.(*idleConn).firstMessageCame()
	}
}

// forget drops c from the connections waiting for a first message, when
// it closes before one came.
func (l *streamListener) forget(remote string, c *idleConn) {
	if l.awaiting.CompareAndDelete(remote, c) {
		l.awaitingCount.Add(-1)
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
// from it or written to it for timeout, or, when it awaits a first
// message, once that has not come in time: sipgo then closes it as if the
// peer had, and forgets it. Traffic only records the time; the read
// deadline is moved when it expires, so a busy connection costs a clock
// read per read and write and one deadline per timeout.
type idleConn struct {
	net.Conn
	// timeout is the idle timeout; 0 or less keeps the connection however
	// quiet.
	timeout time.Duration
	onIdle  func(net.Conn)
	// lastActive is the time of the last traffic, in nanoseconds since
	// processStart on the monotonic clock.
	lastActive atomic.Int64
	// deadline is the read deadline last set; only the reader touches it.
	deadline time.Time

	// firstBy, when set, is when the first message must have come by;
	// firstCame says it has. Bytes alone do not count: CRLF keep-alives,
	// a message cut short or a TLS handshake are no message.
	firstBy          time.Time
	firstCame        atomic.Bool
	onNoFirstMessage func(net.Conn)
	// forget, when set, is called once the connection closes.
	forget    func()
	closeOnce sync.Once
}

func newIdleConn(conn net.Conn, timeout time.Duration, onIdle func(net.Conn)) *idleConn {
	c := &idleConn{Conn: conn, timeout: timeout, onIdle: onIdle}
	c.touch()
	if timeout > 0 {
		c.deadline = time.Now().Add(timeout)
		// A connection already gone fails its first read anyway.
		_ = conn.SetReadDeadline(c.deadline)
	}
	return c
}

// awaitFirstMessage bounds the time until the first complete message; it
// is called before the first read.
func (c *idleConn) awaitFirstMessage(within time.Duration, onMissing func(net.Conn), forget func()) {
	c.firstBy = time.Now().Add(within)
	c.onNoFirstMessage, c.forget = onMissing, forget
	if c.deadline.IsZero() || c.firstBy.Before(c.deadline) {
		c.deadline = c.firstBy
		_ = c.Conn.SetReadDeadline(c.deadline)
	}
}

// firstMessageCame lifts the first-message bound. It runs on the reader,
// between reads: sipgo parses and hands on messages there.
func (c *idleConn) firstMessageCame() { c.firstCame.Store(true) }

func (c *idleConn) awaitsFirstMessage() bool { return !c.firstBy.IsZero() && !c.firstCame.Load() }

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
		awaiting := c.awaitsFirstMessage()
		if awaiting && !now.Before(c.firstBy) {
			c.onNoFirstMessage(c.Conn)
			return n, io.EOF
		}
		var next time.Time
		if c.timeout > 0 {
			quiet := now.Sub(processStart) - time.Duration(c.lastActive.Load())
			if quiet >= c.timeout {
				c.onIdle(c.Conn)
				return n, io.EOF
			}
			next = now.Add(c.timeout - quiet)
		}
		if awaiting && (next.IsZero() || c.firstBy.Before(next)) {
			next = c.firstBy
		}
		// A zero deadline, with no bound left, clears it.
		c.deadline = next
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

func (c *idleConn) Close() error {
	if c.forget != nil {
		c.closeOnce.Do(c.forget)
	}
	return c.Conn.Close()
}
