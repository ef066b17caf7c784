package e2e

import (
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// pcmuPair registers callee and returns PCMU phones for a relayed call.
func pcmuPair(t *testing.T, from, to user, registrar string) (*phone, *phone) {
	t.Helper()
	caller := newPhone(t, from, pcmuCodec(), 0, 101, callerHz)
	callee := newPhone(t, to, pcmuCodec(), 0, 101, calleeHz)
	callee.register(t, registrar)
	return caller, callee
}

// stillTalking asserts audio still flows both ways and nobody got a BYE.
func stillTalking(t *testing.T, c *call) {
	t.Helper()
	c.caller.rtp.reset()
	c.callee.rtp.reset()
	c.callee.rtp.waitTone(t, "callee", callerHz)
	c.caller.rtp.waitTone(t, "caller", calleeHz)
	for _, p := range []*phone{c.caller, c.callee} {
		select {
		case <-p.byes:
			t.Fatalf("%s was hung up", p.user.name)
		default:
		}
	}
}

// TestDeadNodeCallsAreHungUp: a media node killed mid-call has both legs of
// its calls hung up by a proxy within seconds, while the call on the other
// node goes on.
func TestDeadNodeCallsAreHungUp(t *testing.T) {
	n := startNATS(t)
	// One unit each: the first call lands on A, the second on B.
	nodeA := startMedia(t, n, "media-a", mediaOpts{capacity: 1})
	proxy := startProxy(t, n, "proxy-a", proxyOpts{nodes: 1})
	callerA, calleeA := pcmuPair(t, alice, bob, proxy.sipAddr)
	onA := connect(t, callerA, calleeA, proxy.sipAddr)
	nodeB := startMedia(t, n, "media-b", mediaOpts{capacity: 1})
	proxy.waitNodes(t, 2)
	callerB, calleeB := pcmuPair(t, carol, dave, proxy.sipAddr)
	onB := connect(t, callerB, calleeB, proxy.sipAddr)
	if nodeA.gauge(t, "callgrid_media_sessions_active") != 1 || nodeB.gauge(t, "callgrid_media_sessions_active") != 1 {
		t.Fatal("calls did not land one per node")
	}

	ended := n.callEnded(t)
	killed := time.Now()
	nodeA.kill()
	receiveWithin(t, "bye at the caller of the dead node's call", onA.caller.byes, 8*time.Second)
	receiveWithin(t, "bye at the callee of the dead node's call", onA.callee.byes, 8*time.Second)
	// The proxy that hung the call up ends it on the bus for the dead node.
	if ev := receiveWithin(t, "call_ended for the dead node's call", ended, 8*time.Second); ev.GetNodeId() != "media-a" || ev.GetCause() != "node_down" || ev.GetDurationSeconds() <= 0 {
		t.Fatalf("call_ended %v, want node media-a, cause node_down and a duration", ev)
	}
	t.Logf("dead node's call hung up %v after the kill", time.Since(killed).Round(10*time.Millisecond))
	stillTalking(t, onB)

	if err := onB.out.Bye(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("bye: %v", err)
	}
	nodeB.waitIdle(t)
}

// TestMediaTimeoutHangsUpBothLegs: when both legs fall silent the node
// times the session out and a proxy sends BYE to both.
func TestMediaTimeoutHangsUpBothLegs(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{mediaTimeout: time.Second})
	caller, callee := pcmuPair(t, alice, bob, s.proxy.sipAddr)
	c := connect(t, caller, callee, s.proxy.sipAddr)
	fallSilentAndHangUp(t, s, c)
	if got := scrape(t, s.proxy.httpURL, "sip_proxy_media_hangups_total"); got != 2 {
		t.Errorf("the proxy sent %v BYEs of its own, want 2", got)
	}
}

// TestSilentEarlyMediaIsNotADeadCall: a callee that answers with SDP in a
// 183 and rings without a sound for longer than the media timeout is not
// timed out: the timeout starts at the 200, and the call then goes on.
func TestSilentEarlyMediaIsNotADeadCall(t *testing.T) {
	s := startStack(t, proxyOpts{inviteTimeout: 10 * time.Second}, mediaOpts{mediaTimeout: time.Second})
	caller, callee := pcmuPair(t, alice, bob, s.proxy.sipAddr)
	callee.behaviour.Store(&calleeBehaviour{ringFor: 3 * time.Second, silentEarlyMedia: true})
	c := connect(t, caller, callee, s.proxy.sipAddr)
	stillTalking(t, c)
	if got := scrape(t, s.proxy.httpURL, "sip_proxy_media_hangups_total"); got != 0 {
		t.Errorf("the proxy hung up %v legs of a live call", got)
	}
	if err := c.out.Bye(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("bye: %v", err)
	}
	s.node.waitIdle(t)
}

// TestAnswerInProvisionalIsFinalAtTheNode: a callee that answers in its
// 183 and sends a 200 without SDP (reliable provisional responses) has a
// call the node takes as answered: audio flows, and when both phones fall
// silent the media timeout hangs it up.
func TestAnswerInProvisionalIsFinalAtTheNode(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{mediaTimeout: time.Second})
	caller, callee := pcmuPair(t, alice, bob, s.proxy.sipAddr)
	callee.behaviour.Store(&calleeBehaviour{ringFor: 100 * time.Millisecond, silentEarlyMedia: true, bodilessFinal: true})
	c := connect(t, caller, callee, s.proxy.sipAddr)
	fallSilentAndHangUp(t, s, c)
}

// fallSilentAndHangUp silences both phones of c and waits for the media
// timeout's BYE at each and for the node to be idle.
func fallSilentAndHangUp(t *testing.T, s *stack, c *call) {
	t.Helper()
	c.caller.rtp.sending.Store(false)
	c.callee.rtp.sending.Store(false)
	receiveWithin(t, "bye at caller", c.caller.byes, 8*time.Second)
	receiveWithin(t, "bye at callee", c.callee.byes, 8*time.Second)
	s.node.waitIdle(t)
}

// TestMediaTimeoutWaitsForAProxy: a call times out while no proxy runs;
// the timeout waits in the events stream, and one of the proxies started
// next hangs the call up. Dead calls end even across a proxy outage.
func TestMediaTimeoutWaitsForAProxy(t *testing.T) {
	n := startNATS(t)
	node := startMedia(t, n, "media-a", mediaOpts{mediaTimeout: time.Second})
	first := startProxy(t, n, "proxy-1", proxyOpts{nodes: 1})
	caller, callee := pcmuPair(t, alice, bob, first.sipAddr)
	c := connect(t, caller, callee, first.sipAddr)
	first.stop(syscall.SIGTERM, 5*time.Second)

	c.caller.rtp.sending.Store(false)
	c.callee.rtp.sending.Store(false)
	node.waitIdle(t) // timed out, with no proxy to tell
	select {
	case <-c.caller.byes:
		t.Fatal("a BYE came with no proxy running")
	default:
	}

	second := startProxy(t, n, "proxy-2", proxyOpts{nodes: 1})
	third := startProxy(t, n, "proxy-3", proxyOpts{nodes: 1})
	receiveWithin(t, "bye at caller", c.caller.byes, 8*time.Second)
	receiveWithin(t, "bye at callee", c.callee.byes, 8*time.Second)
	time.Sleep(500 * time.Millisecond) // room for a second hang-up, were there one
	byes := scrape(t, second.httpURL, "sip_proxy_media_hangups_total") + scrape(t, third.httpURL, "sip_proxy_media_hangups_total")
	if byes != 2 {
		t.Errorf("the proxies sent %v BYEs of their own, want 2: one replica hangs each call up", byes)
	}
}

// TestReplicasShareCallsAndNodes: two proxies and two nodes. Calls spread
// over both nodes, and a BYE sent to the replica that did not carry the
// call still ends it and frees its session.
func TestReplicasShareCallsAndNodes(t *testing.T) {
	n := startNATS(t)
	nodeA := startMedia(t, n, "media-a", mediaOpts{})
	nodeB := startMedia(t, n, "media-b", mediaOpts{})
	port1, port2 := freeSIPPort(t), freeSIPPort(t)
	aliases := []string{"127.0.0.1:" + strconv.Itoa(port1), "127.0.0.1:" + strconv.Itoa(port2)}
	p1 := startProxy(t, n, "proxy-1", proxyOpts{port: port1, aliases: aliases, nodes: 2})
	p2 := startProxy(t, n, "proxy-2", proxyOpts{port: port2, aliases: aliases, nodes: 2})

	caller1, callee1 := pcmuPair(t, alice, bob, p1.sipAddr)
	caller2, callee2 := pcmuPair(t, carol, dave, p1.sipAddr)
	// Registered through one replica, called through the other.
	first := connect(t, caller1, callee1, p2.sipAddr)
	second := connect(t, caller2, callee2, p2.sipAddr)
	if nodeA.gauge(t, "callgrid_media_sessions_active") != 1 || nodeB.gauge(t, "callgrid_media_sessions_active") != 1 {
		t.Errorf("calls did not spread over both nodes: a=%v b=%v",
			nodeA.gauge(t, "callgrid_media_sessions_active"), nodeB.gauge(t, "callgrid_media_sessions_active"))
	}

	// The route set names replica 2; the BYE goes to replica 1.
	bye := sip.NewRequest(sip.BYE, first.out.InviteResponse.Contact().Address)
	bye.SetDestination(p1.sipAddr)
	res, err := first.out.Do(withTimeout(t, 10*time.Second), bye)
	if err != nil || res.StatusCode != sip.StatusOK {
		t.Fatalf("bye through the other replica: %v %v", res, err)
	}
	receiveWithin(t, "bye at callee", callee1.byes, 5*time.Second)
	waitFor(t, 5*time.Second, "one session left", func() bool {
		return nodeA.gauge(t, "callgrid_media_sessions_active")+nodeB.gauge(t, "callgrid_media_sessions_active") == 1
	})
	stillTalking(t, second)
	if err := second.in.Bye(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("bye from callee: %v", err)
	}
	receiveWithin(t, "bye at caller", caller2.byes, 5*time.Second)
	nodeA.waitIdle(t)
	nodeB.waitIdle(t)
}

// TestBusRestartKeepsCalls: while NATS is down the established call keeps
// its audio and new calls get a fast 503; once NATS is back new calls work
// and the old one still hangs up cleanly.
func TestBusRestartKeepsCalls(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	caller, callee := pcmuPair(t, alice, bob, s.proxy.sipAddr)
	c := connect(t, caller, callee, s.proxy.sipAddr)
	caller2, callee2 := pcmuPair(t, carol, dave, s.proxy.sipAddr)

	s.nats.stop()
	waitFor(t, 5*time.Second, "proxy notices the bus is gone", func() bool { return !httpOK(s.proxy.httpURL + "/readyz") })
	// Long enough for the proxy's view to drop the silent node: the bus
	// outage must not pass for a dead node whose calls get hung up.
	s.proxy.waitNodes(t, 0)
	stillTalking(t, c)
	start := time.Now()
	res := dialRaw(t, caller2, s.proxy.sipAddr, "dave", caller2.localSDP("sendrecv"))
	if res == nil || res.StatusCode != sip.StatusServiceUnavailable || res.GetHeader("Retry-After") == nil {
		t.Fatalf("call while the bus is down: %v, want 503 with Retry-After", res)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("503 took %v, want under a second", took)
	}

	s.nats.start()
	waitFor(t, 15*time.Second, "proxy ready again", func() bool { return httpOK(s.proxy.httpURL + "/readyz") })
	// The node serves offers again once its own connection is back.
	waitFor(t, 15*time.Second, "node ready again", func() bool { return httpOK(s.node.httpURL + "/readyz") })
	s.proxy.waitNodes(t, 1)
	second := connect(t, caller2, callee2, s.proxy.sipAddr)
	stillTalking(t, c)
	for _, cl := range []*call{c, second} {
		if err := cl.out.Bye(withTimeout(t, 10*time.Second)); err != nil {
			t.Fatalf("bye: %v", err)
		}
	}
	s.node.waitIdle(t)
	if got := scrape(t, s.proxy.httpURL, "sip_proxy_media_hangups_total"); got != 0 {
		t.Errorf("the proxy hung up %v legs on its own during the bus restart", got)
	}
}
