package udpio

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

func newLoop(t testing.TB) *Loop {
	t.Helper()
	l, err := NewLoop(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func listen(t testing.TB, addr netip.AddrPort) *Socket {
	t.Helper()
	s, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func peer(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func addrOf(s *Socket) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.Port()))
}

func readWithin(t testing.TB, c *net.UDPConn, d time.Duration) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, MaxDatagram)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return buf[:n], from
}

// A datagram sent to a socket reaches its handler with the sender's
// address, and the handler's reply leaves from that socket.
func TestLoopDeliversAndRepliesFromTheSameSocket(t *testing.T) {
	l := newLoop(t)
	s := listen(t, loopback)
	c := peer(t)
	got := make(chan netip.AddrPort, 1)
	err := l.Add(s, HandlerFunc(func(pkt []byte, src netip.AddrPort, at time.Time) {
		if time.Since(at) > time.Second {
			t.Errorf("receive time %v is stale", at)
		}
		pkt[0] = 'P' // handlers may rewrite the buffer in place
		if err := s.WriteTo(pkt, src); err != nil {
			t.Errorf("reply: %v", err)
		}
		got <- src
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDPAddrPort([]byte("ping"), addrOf(s)); err != nil {
		t.Fatal(err)
	}
	reply, from := readWithin(t, c, 2*time.Second)
	if string(reply) != "Ping" {
		t.Fatalf("reply %q, want %q", reply, "Ping")
	}
	if from != addrOf(s) {
		t.Fatalf("reply came from %v, want the socket's own address %v", from, addrOf(s))
	}
	if src := <-got; src != c.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("handler saw source %v, want %v", src, c.LocalAddr())
	}
}

// After Remove returns, the handler neither runs nor is running, however
// much keeps arriving.
func TestRemoveWaitsForTheHandlerAndStopsDelivery(t *testing.T) {
	l := newLoop(t)
	s := listen(t, loopback)
	c := peer(t)
	var running, calls atomic.Int32
	var removed atomic.Bool
	first := make(chan struct{}, 1)
	err := l.Add(s, HandlerFunc(func([]byte, netip.AddrPort, time.Time) {
		running.Add(1)
		defer running.Add(-1)
		if removed.Load() {
			t.Error("handler ran after Remove returned")
		}
		calls.Add(1)
		select {
		case first <- struct{}{}:
		default:
		}
		time.Sleep(5 * time.Millisecond) // be inside the handler when Remove is called
	}))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = c.WriteToUDPAddrPort([]byte("x"), addrOf(s))
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	<-first
	l.Remove(s)
	if running.Load() != 0 {
		t.Fatal("Remove returned while the handler was running")
	}
	removed.Store(true)
	time.Sleep(50 * time.Millisecond)
	close(stop)
	<-sent
	if calls.Load() == 0 {
		t.Fatal("handler never ran")
	}
}

// Two Removes of one socket at once both wait for its running handler.
func TestConcurrentRemovesBothWaitForTheHandler(t *testing.T) {
	l := newLoop(t)
	s := listen(t, loopback)
	running := slowHandlerRunning(t, l, s)
	early := make(chan bool, 2)
	for range 2 {
		go func() {
			l.Remove(s)
			early <- running.Load() != 0
		}()
	}
	for range 2 {
		if <-early {
			t.Fatal("a Remove returned while the handler was still running")
		}
	}
}

// The handlers of one loop never run at once, whichever sockets their
// datagrams came in on: callers keep the state they share unlocked.
func TestHandlersOfALoopRunOneAtATime(t *testing.T) {
	const sockets, perSocket = 4, 50
	l := newLoop(t)
	var running atomic.Int32
	handled := make(chan struct{}, sockets*perSocket)
	h := HandlerFunc(func([]byte, netip.AddrPort, time.Time) {
		if running.Add(1) != 1 {
			t.Error("two handlers of one loop ran at once")
		}
		time.Sleep(50 * time.Microsecond) // widen the window for an overlap
		running.Add(-1)
		handled <- struct{}{}
	})
	var targets []netip.AddrPort
	for range sockets {
		s := listen(t, loopback)
		if err := l.Add(s, h); err != nil {
			t.Fatal(err)
		}
		targets = append(targets, addrOf(s))
	}
	c := peer(t)
	for range perSocket {
		for _, to := range targets {
			if _, err := c.WriteToUDPAddrPort([]byte("x"), to); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Loopback may drop a datagram under load; a good share is enough.
	deadline := time.After(2 * time.Second)
	for range sockets * perSocket / 2 {
		select {
		case <-handled:
		case <-deadline:
			t.Fatal("too few datagrams handled")
		}
	}
}

// A removed socket can be added again, to its loop or another, and only
// the handler it was last added with sees its datagrams.
func TestRemovedSocketCanBeAddedAgain(t *testing.T) {
	loops := []*Loop{newLoop(t), newLoop(t), newLoop(t)}
	s := listen(t, loopback)
	c := peer(t)
	got := make(chan int, 1)
	for i, l := range append(loops, loops[0]) {
		if err := l.Add(s, HandlerFunc(func([]byte, netip.AddrPort, time.Time) { got <- i })); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
		if _, err := c.WriteToUDPAddrPort([]byte("x"), addrOf(s)); err != nil {
			t.Fatal(err)
		}
		select {
		case by := <-got:
			if by != i {
				t.Fatalf("datagram handled by the handler of add %d, want %d", by, i)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("add %d: nothing delivered", i)
		}
		l.Remove(s)
	}
}

// A loop refuses a socket it already reads, and goes on serving it.
func TestSocketIsAddedOnce(t *testing.T) {
	l := newLoop(t)
	s := listen(t, loopback)
	c := peer(t)
	got := make(chan struct{}, 1)
	if err := l.Add(s, HandlerFunc(func([]byte, netip.AddrPort, time.Time) { got <- struct{}{} })); err != nil {
		t.Fatal(err)
	}
	if err := l.Add(s, HandlerFunc(func([]byte, netip.AddrPort, time.Time) {})); err == nil {
		t.Fatal("a socket was added twice")
	}
	if _, err := c.WriteToUDPAddrPort([]byte("x"), addrOf(s)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("nothing delivered after the refused Add")
	}
}

// An IPv6 wildcard socket is dual-stack: IPv4 senders appear as IPv4
// addresses and can be answered.
func TestDualStackSocketSpeaksIPv4(t *testing.T) {
	s, err := Listen(netip.MustParseAddrPort("[::]:0"))
	if err != nil {
		t.Skipf("no IPv6 on this host: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	l := newLoop(t)
	c := peer(t)
	if err := l.Add(s, HandlerFunc(func(pkt []byte, src netip.AddrPort, _ time.Time) {
		if !src.Addr().Is4() {
			t.Errorf("source %v is not IPv4", src)
		}
		_ = s.WriteTo(pkt, src)
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDPAddrPort([]byte("v4"), addrOf(s)); err != nil {
		t.Fatal(err)
	}
	if reply, _ := readWithin(t, c, 2*time.Second); string(reply) != "v4" {
		t.Fatalf("reply %q", reply)
	}
}

func TestWritesThatCannotBeSentFail(t *testing.T) {
	s := listen(t, loopback)
	if err := s.WriteTo([]byte("x"), netip.MustParseAddrPort("[::1]:9")); err == nil {
		t.Fatal("an IPv4 socket sent to an IPv6 address")
	}
	if err := s.WriteTo(nil, addrOf(s)); err != nil {
		t.Fatalf("empty datagram: %v", err)
	}
	_ = s.Close()
	if err := s.WriteTo([]byte("x"), addrOf(s)); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestClosedLoopRefusesSockets(t *testing.T) {
	l, err := NewLoop(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := listen(t, loopback)
	l.Close()
	l.Close()
	if err := l.Add(s, HandlerFunc(func([]byte, netip.AddrPort, time.Time) {})); !errors.Is(err, ErrLoopClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
	l.Remove(s) // returns at once
}

func TestGroupSpreadsOverItsLoops(t *testing.T) {
	g, err := NewGroup(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	seen := map[*Loop]int{}
	for range 9 {
		seen[g.At(g.Pick())]++
	}
	if g.Size() != 3 || len(seen) != 3 {
		t.Fatalf("size %d, loops used %d", g.Size(), len(seen))
	}
	for l, n := range seen {
		if n != 3 {
			t.Fatalf("loop %p picked %d times of 9", l, n)
		}
	}
}

// BenchmarkRelay forwards datagrams from one socket to a peer through a
// loop, as a media leg does: allocations per packet must be zero.
func BenchmarkRelay(b *testing.B) {
	l := newLoop(b)
	in := listen(b, loopback)
	out := listen(b, loopback)
	sink := peer(b)
	src := peer(b)
	dst := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := l.Add(in, HandlerFunc(func(pkt []byte, _ netip.AddrPort, _ time.Time) { _ = out.WriteTo(pkt, dst) })); err != nil {
		b.Fatal(err)
	}
	pkt := make([]byte, 172)
	buf := make([]byte, MaxDatagram)
	to := addrOf(in)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := src.WriteToUDPAddrPort(pkt, to); err != nil {
			b.Fatal(err)
		}
		_ = sink.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// A Remove that meets a closing loop still returns only once the handler
// that was running has finished.
func TestRemoveDuringCloseWaitsForTheHandler(t *testing.T) {
	l, err := NewLoop(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := listen(t, loopback)
	running := slowHandlerRunning(t, l, s)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		l.Close()
	}()
	for refused := false; !refused; {
		l.mu.Lock()
		refused = l.closed
		l.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	l.Remove(s)
	if running.Load() != 0 {
		t.Fatal("Remove returned while the handler was still running")
	}
	<-closed
}

// slowHandlerRunning adds to l a handler for s that takes 50 ms, sends s a
// datagram and returns once the handler is running; the counter tells how
// many of its calls are running.
func slowHandlerRunning(t *testing.T, l *Loop, s *Socket) *atomic.Int32 {
	t.Helper()
	c := peer(t)
	running := new(atomic.Int32)
	inside := make(chan struct{})
	if err := l.Add(s, HandlerFunc(func([]byte, netip.AddrPort, time.Time) {
		running.Add(1)
		defer running.Add(-1)
		close(inside)
		time.Sleep(50 * time.Millisecond)
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteToUDPAddrPort([]byte("x"), addrOf(s)); err != nil {
		t.Fatal(err)
	}
	<-inside
	return running
}

// An IPv4 socket sends to a v4-mapped address as to the IPv4 address it
// maps, on either implementation.
func TestIPv4SocketSendsToMappedAddress(t *testing.T) {
	s := listen(t, loopback)
	c := peer(t)
	to := c.LocalAddr().(*net.UDPAddr).AddrPort()
	mapped := netip.AddrPortFrom(netip.AddrFrom16(to.Addr().As16()), to.Port())
	if err := s.WriteTo([]byte("m"), mapped); err != nil {
		t.Fatalf("write to %s: %v", mapped, err)
	}
	if pkt, _ := readWithin(t, c, time.Second); string(pkt) != "m" {
		t.Fatalf("got %q", pkt)
	}
}

// A datagram longer than MaxDatagram is dropped and reported rather than
// handed on cut short: a relay would forward the truncated packet as if it
// were whole. One of exactly MaxDatagram bytes still gets through.
func TestOversizedDatagramIsDropped(t *testing.T) {
	errs := make(chan error, 8)
	l, err := NewLoop(func(err error) { errs <- err })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	s := listen(t, loopback)
	c := peer(t)
	got := make(chan int, 8)
	if err := l.Add(s, HandlerFunc(func(pkt []byte, _ netip.AddrPort, _ time.Time) { got <- len(pkt) })); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{MaxDatagram + 1, 4 * MaxDatagram, MaxDatagram, 1} {
		if _, err := c.WriteToUDPAddrPort(make([]byte, size), addrOf(s)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []int{MaxDatagram, 1} {
		select {
		case n := <-got:
			if n != want {
				t.Fatalf("handler got %d bytes, want %d (the oversized datagrams dropped)", n, want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("the %d-byte datagram was not delivered", want)
		}
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("read error %v, want ErrTruncated", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("an oversized datagram was not reported")
		}
	}
}

// A socket is read by one loop at a time, on either implementation: a
// second loop reading it would run its handlers alongside the first's.
func TestSocketIsReadByOneLoopAtATime(t *testing.T) {
	l1, l2 := newLoop(t), newLoop(t)
	s := listen(t, loopback)
	c := peer(t)
	got := make(chan int, 4)
	handler := func(i int) Handler {
		return HandlerFunc(func([]byte, netip.AddrPort, time.Time) { got <- i })
	}
	expect := func(want int) {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort([]byte("x"), addrOf(s)); err != nil {
			t.Fatal(err)
		}
		select {
		case by := <-got:
			if by != want {
				t.Fatalf("datagram handled by loop %d, want %d", by, want)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("loop %d handled nothing", want)
		}
	}
	if err := l1.Add(s, handler(1)); err != nil {
		t.Fatal(err)
	}
	if err := l2.Add(s, handler(2)); err == nil {
		t.Fatal("a socket read by one loop was added to another")
	}
	expect(1)
	l1.Remove(s)
	if err := l2.Add(s, handler(2)); err != nil {
		t.Fatalf("add to a second loop after Remove: %v", err)
	}
	expect(2)
	// A loop that stops lets go of the sockets it still reads.
	l2.Close()
	if err := l1.Add(s, handler(1)); err != nil {
		t.Fatalf("add after the loop reading it closed: %v", err)
	}
	expect(1)
}

// Pick stays within the group however long the process has run: its
// counter wraps, and past 2^31 picks it no longer fits a 32-bit int.
func TestPickStaysInRangeAsItsCounterWraps(t *testing.T) {
	g, err := NewGroup(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, start := range []uint32{1<<31 - 1, 1<<32 - 2} {
		g.next.Store(start)
		for range 4 {
			if i := g.Pick(); i < 0 || i >= g.Size() {
				t.Fatalf("Pick() = %d after %d picks, want 0-%d", i, start, g.Size()-1)
			}
		}
	}
}

// A closed socket cannot be added: on Linux its descriptor number may
// already name the next socket opened, whose datagrams its handler would
// then be given.
func TestClosedSocketIsNotAdded(t *testing.T) {
	l := newLoop(t)
	old, err := Listen(loopback)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := listen(t, loopback)
	if err := l.Add(old, HandlerFunc(func([]byte, netip.AddrPort, time.Time) {})); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add of a closed socket: %v, want ErrClosed", err)
	}
	// Nor did it take the next socket's descriptor into the loop.
	if err := l.Add(fresh, HandlerFunc(func([]byte, netip.AddrPort, time.Time) {})); err != nil {
		t.Fatalf("Add of the socket opened after: %v", err)
	}
}
