package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestTLSPhoneReachedThroughAnotherReplica: a phone registered over TLS
// with one replica, which alone holds its connection, is called through
// another. The INVITE goes through the holder, audio flows both ways, and
// a BYE from either side, or the proxies' own when the media times out,
// reaches the phones across both replicas.
func TestTLSPhoneReachedThroughAnotherReplica(t *testing.T) {
	// Apart, each replica takes only its own address for itself, and the
	// dialog's requests find the holder by its Record-Route. Alike, each
	// takes the other's too, as replicas behind one service address do:
	// the requests find the holder by the phone's alias alone, and a
	// request passed from one to the other must not look like a loop.
	for _, alike := range []bool{false, true} {
		name := "apart"
		if alike {
			name = "alike"
		}
		t.Run(name, func(t *testing.T) { callHeldPhoneThroughAnotherReplica(t, alike) })
	}
}

func callHeldPhoneThroughAnotherReplica(t *testing.T, alike bool) {
	n := startNATS(t)
	node := startMedia(t, n, "media-a", mediaOpts{mediaTimeout: 2 * time.Second})
	extra, tlsAddr, roots := tlsListener(t)
	port1, port2 := freeSIPPort(t), freeSIPPort(t)
	replica := func(port int) string { return fmt.Sprintf("  replica_addr: \"127.0.0.1:%d\"\n", port) }
	var aliases []string
	if alike {
		aliases = []string{"127.0.0.1:" + strconv.Itoa(port1), "127.0.0.1:" + strconv.Itoa(port2), tlsAddr}
	}
	startProxy(t, n, "proxy-1", proxyOpts{port: port1, tcp: true, aliases: aliases, extra: extra + replica(port1), nodes: 1})
	other := startProxy(t, n, "proxy-2", proxyOpts{port: port2, tcp: true, aliases: aliases, extra: replica(port2), nodes: 1})

	cases := []struct {
		name           string
		caller, callee user
		hangUp         string // "caller", "callee" or "timeout"
	}{
		{name: "caller hangs up", caller: alice, callee: bob, hangUp: "caller"},
		{name: "callee hangs up", caller: carol, callee: dave, hangUp: "callee"},
		{name: "media times out", caller: bob, callee: alice, hangUp: "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			callee := newTLSPhone(t, tc.callee, roots, calleeHz)
			callee.register(t, tlsAddr)
			caller := newPhone(t, tc.caller, pcmuCodec(), 0, 101, callerHz)
			caller.register(t, other.sipAddr)

			c := connect(t, caller, callee, other.sipAddr)
			if got := strings.ToLower(c.invite.Transport()); got != "tls" {
				t.Errorf("invite reached the callee over %s, want its own tls connection", got)
			}
			waitFor(t, 5*time.Second, "ack at the callee", func() bool { return c.in.LoadState() == sip.DialogStateConfirmed })
			switch tc.hangUp {
			case "callee":
				if err := c.in.Bye(withTimeout(t, 10*time.Second)); err != nil {
					t.Fatalf("bye from the callee: %v", err)
				}
				receiveWithin(t, "bye at the caller", caller.byes, 5*time.Second)
			case "caller":
				if err := c.out.Bye(withTimeout(t, 10*time.Second)); err != nil {
					t.Fatalf("bye from the caller: %v", err)
				}
				bye := receiveWithin(t, "bye at the callee", callee.byes, 5*time.Second)
				if got := strings.ToLower(bye.Transport()); got != "tls" {
					t.Errorf("bye reached the callee over %s, want tls", got)
				}
			case "timeout":
				c.caller.rtp.sending.Store(false)
				c.callee.rtp.sending.Store(false)
				receiveWithin(t, "bye at the caller", caller.byes, 8*time.Second)
				receiveWithin(t, "bye at the callee", callee.byes, 8*time.Second)
			}
			node.waitIdle(t)
		})
	}
}
