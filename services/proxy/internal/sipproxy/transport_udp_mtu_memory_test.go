package sipproxy

import (
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// blackholeTCP listens for TCP on the peer's port, with the socket it
// holds there, with an accept queue of one that it fills and never accepts
// from: Linux then drops every further SYN, as a firewall that silently
// drops TCP does, and a connection to the port waits out its timeout.
func blackholeTCP(t *testing.T, peer *rawPeer) {
	t.Helper()
	if err := syscall.Listen(peer.tcpHeld, 0); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(peer.port))
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Fatal("the accept queue never filled: TCP to the port is not dropped")
}

// A gateway with no transport set takes a request above udp_mtu over TCP;
// when it silently drops TCP, the first such request waits for the
// connection before it goes over UDP, and the next ones, for
// tcpFailureMemory, go over UDP at once.
func TestLargeRequestsSkipTCPWhereItFailed(t *testing.T) {
	gateway := newRawPeer(t, false)
	blackholeTCP(t, gateway)
	cfg := trustedConfig()
	cfg.Transports = []string{"udp", "tcp"}
	cfg.GatewayGroups = []GatewayGroup{{Name: "trunk", Gateways: []Gateway{{Addr: gateway.addr}}}}
	cfg.Dialplan = []DialplanRule{{Name: "out", Prefix: "9", Group: "trunk"}}
	p := startProxy(t, cfg)
	caller := newRawPeer(t, false)

	call := func(n int) time.Duration {
		t.Helper()
		invite := caller.request(sip.INVITE, "sip:900@localhost", "alice", "skip-tcp-"+strconv.Itoa(n), 1)
		invite.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		invite.SetBody(largeSDP(3000, 30000))
		start := time.Now()
		caller.send(t, p.Addr("udp"), invite)
		got := gateway.next(t, "invite at the gateway", isRequest(sip.INVITE))
		took := time.Since(start)
		if got.transport != "UDP" {
			t.Fatalf("call %d: invite came over %s, want UDP", n, got.transport)
		}
		if err := got.reply(sip.NewResponseFromRequest(got.msg.(*sip.Request), sip.StatusBusyHere, "Busy Here", nil)); err != nil {
			t.Fatal(err)
		}
		if res := caller.next(t, "final response at the caller", isFinal(sip.INVITE)).msg.(*sip.Response); res.StatusCode != sip.StatusBusyHere {
			t.Fatalf("call %d: %d, want 486", n, res.StatusCode)
		}
		return took
	}
	if took := call(1); took < mtuTCPConnectTimeout/2 {
		t.Fatalf("first call reached the gateway in %v: TCP was not waited for", took)
	}
	if got := testutil.ToFloat64(p.m.udpMTUTCPSkips); got != 0 {
		t.Errorf("tcp skipped %v times on the first call, want 0", got)
	}
	for n := 2; n <= 3; n++ {
		if took := call(n); took >= mtuTCPConnectTimeout/2 {
			t.Fatalf("call %d reached the gateway in %v: it waited for TCP again", n, took)
		}
	}
	if got := testutil.ToFloat64(p.m.udpMTUTCPSkips); got != 2 {
		t.Errorf("tcp skipped %v times, want 2", got)
	}
	if got := testutil.ToFloat64(p.m.udpMTUExceeded.WithLabelValues("udp")); got != 3 {
		t.Errorf("udp_mtu_exceeded{sent_over=udp} %v, want 3", got)
	}
}

// A failure is remembered for tcpFailureMemory and then forgotten, and
// the memory holds no more than tcpFailureTargets targets.
func TestTCPFailuresExpire(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	advance := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
	}
	f := newTCPFailures(clock)
	f.failed("192.0.2.1:5060")
	if !f.recent("192.0.2.1:5060") || f.recent("192.0.2.2:5060") {
		t.Fatal("a failure is not remembered for its target alone")
	}
	advance(tcpFailureMemory - time.Second)
	if !f.recent("192.0.2.1:5060") {
		t.Fatal("failure forgotten before tcpFailureMemory")
	}
	advance(time.Second)
	if f.recent("192.0.2.1:5060") {
		t.Fatal("failure still remembered after tcpFailureMemory")
	}

	for i := range tcpFailureTargets + 10 {
		f.failed("198.51.100.1:" + strconv.Itoa(i))
	}
	if n := len(f.until); n != tcpFailureTargets {
		t.Fatalf("%d targets remembered, want at most %d", n, tcpFailureTargets)
	}
	advance(tcpFailureMemory)
	f.sweep()
	if n := len(f.until); n != 0 {
		t.Fatalf("%d expired targets left after a sweep", n)
	}
}
