package sipproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"callgrid.dev/services/proxy/internal/location"
)

// stuckListener is a loopback listener whose connects hang: it has a
// backlog of none, and the one connection it queued is not accepted, so
// the kernel drops further SYNs and a dial waits, for its timeout or
// until free lets a retransmitted SYN in.
type stuckListener struct {
	fd      int
	addr    string
	queued  int
	fillers []net.Conn
}

func newStuckListener(t *testing.T) *stuckListener {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	l := &stuckListener{fd: fd, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))}
	// Fill the queue; a few connects may get in before one hangs.
	for range 4 {
		conn, err := net.DialTimeout("tcp", l.addr, 200*time.Millisecond)
		if err != nil {
			return l
		}
		l.queued++
		l.fillers = append(l.fillers, conn)
		t.Cleanup(func() { _ = conn.Close() })
	}
	t.Skip("the kernel queues every connect to a listener with no backlog")
	return nil
}

// accept takes the next queued connection, waiting up to within.
func (l *stuckListener) accept(t *testing.T, within time.Duration) net.Conn {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		nfd, _, err := syscall.Accept(l.fd)
		if err == nil {
			f := os.NewFile(uintptr(nfd), "accepted")
			conn, err := net.FileConn(f)
			_ = f.Close()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			return conn
		}
		if !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("accept: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection came")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// free empties the queue, so that the next SYN a dial sends again gets in.
func (l *stuckListener) free(t *testing.T) {
	t.Helper()
	for range l.queued {
		_ = l.accept(t, time.Second).Close()
	}
	l.queued = 0
}

// bindTCPContact binds a contact of bob over TCP at addr, the newest: its
// branch is sent first.
func bindTCPContact(t *testing.T, store location.Store, addr string) {
	t.Helper()
	now := time.Now()
	if _, err := store.Update(context.Background(), "bob@localhost", func(live []location.Binding) ([]location.Binding, error) {
		return append(live, location.Binding{
			AOR: "bob@localhost", Contact: "sip:bob@" + addr + ";transport=tcp", Received: addr, Transport: "TCP",
			CallID: "tcp-phone", CSeq: 1, Expires: now.Add(time.Hour), UpdatedAt: now.Add(time.Minute),
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
}

// slowDialConfig is a proxy for a TCP contact next to a UDP one.
func slowDialConfig() Config {
	cfg := trustedConfig()
	cfg.Transports = []string{"udp", "tcp"}
	cfg.BranchTimeout = 10 * time.Second
	return cfg
}

// TestForkSlowDialDelaysNoOtherBranch: a contact over TCP whose
// connection takes long to set up (here it never does, and its dial runs
// to its timeout) does not hold up the other contacts of its group: they
// ring, and answer, while it still dials. Sent one after another, the
// branches after it waited for its dial to fail first.
func TestForkSlowDialDelaysNoOtherBranch(t *testing.T) {
	store := location.NewMemoryStore(nil)
	p := startProxy(t, slowDialConfig(), WithLocationStore(store))
	phone := newForkPhone(t, "phone")
	phone.registerQ(t, p, "")
	bindTCPContact(t, store, newStuckListener(t).addr)
	failed := func() float64 { return testutil.ToFloat64(p.m.forkedBranches.WithLabelValues(forkFailed)) }

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	tx, done := inviteUntil(t, caller, p.Addr("udp"), invite, sip.StatusRinging)
	receive(t, "invite at phone", phone.invites)
	if got := failed(); got != 0 {
		t.Fatalf("the phone rang only once the TCP contact's dial had failed (%v failed branches)", got)
	}
	phone.answer <- sip.StatusOK
	if got := finalStatus(t, tx, done); got != sip.StatusOK {
		t.Fatalf("caller got %d, want the phone's 200", got)
	}
	if got := failed(); got != 0 {
		t.Fatalf("the caller got its 200 only once the TCP contact's dial had failed (%v failed branches)", got)
	}
	// The dial ends on its own, and with it the branch, which counts as
	// given up for the answer elsewhere.
	waitForWithin(t, "the TCP contact's dial to end", defaultConnectTimeout+5*time.Second, func() bool { return p.InFlight() == 0 })
	if got := testutil.ToFloat64(p.m.forkedBranches.WithLabelValues(forkElsewhere)); got != 1 {
		t.Errorf("forked branches given up for the answer elsewhere: %v, want 1", got)
	}
	noPumpsLeft(t, p)
}

// waitForWithin is waitFor with its own bound.
func waitForWithin(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestForkSlowDialThenRingingIsCancelled: a TCP contact whose connection
// comes up only after another contact answered gets its INVITE then, and
// once it rings, the CANCEL of a call completed elsewhere (RFC 3261 9.1,
// 16.7 step 10), like a contact slow to answer.
func TestForkSlowDialThenRingingIsCancelled(t *testing.T) {
	store := location.NewMemoryStore(nil)
	p := startProxy(t, slowDialConfig(), WithLocationStore(store))
	phone := newForkPhone(t, "phone")
	phone.registerQ(t, p, "")
	stuck := newStuckListener(t)
	bindTCPContact(t, store, stuck.addr)

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	tx, done := inviteUntil(t, caller, p.Addr("udp"), invite, sip.StatusRinging)
	receive(t, "invite at phone", phone.invites)
	phone.answer <- sip.StatusOK
	if got := finalStatus(t, tx, done); got != sip.StatusOK {
		t.Fatalf("caller got %d, want the phone's 200", got)
	}
	stuck.free(t)
	conn := stuck.accept(t, defaultConnectTimeout)
	tcpPhone := &streamPhone{t: t, conn: conn, r: bufio.NewReader(conn)}
	inv, ok := tcpPhone.next().(*sip.Request)
	if !ok || !inv.IsInvite() {
		t.Fatalf("the TCP contact got %v, want the INVITE", inv)
	}
	ringing := sip.NewResponseFromRequest(inv, sip.StatusRinging, "Ringing", nil)
	ringing.To().Params.Add("tag", "tcp1")
	tcpPhone.send(ringing.String())
	for {
		req, ok := tcpPhone.next().(*sip.Request)
		if !ok {
			continue
		}
		if !req.IsCancel() {
			t.Fatalf("the TCP contact got %s, want the CANCEL", req.Method)
		}
		if got := reasonOf(req); got != `SIP;cause=200;text="Call completed elsewhere"` {
			t.Fatalf("the CANCEL has Reason %q", got)
		}
		tcpPhone.send(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil).String())
		break
	}
	terminated := sip.NewResponseFromRequest(inv, sip.StatusRequestTerminated, "Request Terminated", nil)
	terminated.To().Params.Add("tag", "tcp1")
	tcpPhone.send(terminated.String())
	noPumpsLeft(t, p)
}

// TestForkCallerCancelsWhileDialling: the caller's CANCEL while a TCP
// contact still dials gets the caller its 487 at once; the branch, which
// has sent nothing, ends with its dial, and nobody is left waiting.
func TestForkCallerCancelsWhileDialling(t *testing.T) {
	store := location.NewMemoryStore(nil)
	p := startProxy(t, slowDialConfig(), WithLocationStore(store))
	phone := newForkPhone(t, "phone")
	phone.registerQ(t, p, "")
	bindTCPContact(t, store, newStuckListener(t).addr)

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	tx, done := inviteUntil(t, caller, p.Addr("udp"), invite, sip.StatusRinging)
	receive(t, "invite at phone", phone.invites)
	if res := caller.do(t, p.Addr("udp"), cancelFor(invite)); res.StatusCode != sip.StatusOK {
		t.Fatalf("cancel: %d", res.StatusCode)
	}
	if got := finalStatus(t, tx, done); got != sip.StatusRequestTerminated {
		t.Fatalf("caller got %d, want 487", got)
	}
	receive(t, "cancel at phone", phone.cancels)
	waitForWithin(t, "the TCP contact's dial to end", defaultConnectTimeout+5*time.Second, func() bool { return p.InFlight() == 0 })
	if got := testutil.ToFloat64(p.m.forkedBranches.WithLabelValues(forkCancelled)); got != 2 {
		t.Errorf("forked branches cancelled: %v, want 2", got)
	}
	noPumpsLeft(t, p)
}
