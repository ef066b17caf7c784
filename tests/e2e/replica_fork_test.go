package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestForkAcrossReplicasCancelsTheHeldBranch: a user with two phones, one
// on TLS with a replica that alone holds its connection, the other on UDP,
// is called through the other replica. Both ring; when the UDP phone
// answers, the CANCEL of the TLS branch must reach the TLS phone through
// the replica holding it, and that phone must not be left ringing.
func TestForkAcrossReplicasCancelsTheHeldBranch(t *testing.T) {
	n := startNATS(t)
	node := startMedia(t, n, "media-a", mediaOpts{})
	extra, tlsAddr, roots := tlsListener(t)
	port1, port2 := freeSIPPort(t), freeSIPPort(t)
	replica := func(port int) string { return fmt.Sprintf("  replica_addr: \"127.0.0.1:%d\"\n", port) }
	startProxy(t, n, "proxy-1", proxyOpts{port: port1, tcp: true, extra: extra + replica(port1), nodes: 1})
	other := startProxy(t, n, "proxy-2", proxyOpts{port: port2, tcp: true, extra: replica(port2), nodes: 1})

	held := newTLSPhone(t, alice, roots, calleeHz)
	held.behaviour.Store(&calleeBehaviour{neverAnswer: true})
	held.register(t, tlsAddr)
	answering := newPhone(t, alice, pcmuCodec(), 0, 101, calleeHz)
	answering.behaviour.Store(&calleeBehaviour{ringFor: 300 * time.Millisecond})
	answering.register(t, other.sipAddr)
	caller := newPhone(t, bob, pcmuCodec(), 0, 101, callerHz)
	caller.register(t, other.sipAddr)

	c := connect(t, caller, answering, other.sipAddr)
	receiveWithin(t, "invite at the held phone", held.invites, 5*time.Second)
	receiveWithin(t, "cancel at the held phone", held.cancels, 5*time.Second)
	receiveWithin(t, "the held phone's ringing stopped", held.cancelled, 5*time.Second)
	if err := c.out.Bye(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("bye from the caller: %v", err)
	}
	receiveWithin(t, "bye at the callee", answering.byes, 5*time.Second)
	node.waitIdle(t)
}
