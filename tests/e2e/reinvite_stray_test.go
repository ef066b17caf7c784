package e2e

import (
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestReinvite2xxRetransmittedLateKeepsTheNodesSDP: the callee repeats its
// 200 to a hold re-INVITE after the proxy's client transaction has ended
// (5 s, while a callee missing the ACK repeats it for up to 32 s). The
// repeat carries no Record-Route to tell the proxy its session; it still
// reaches the caller with the node's SDP, the same as the first 200 down
// to the origin version, not with the callee's own address, and the call
// goes on.
func TestReinvite2xxRetransmittedLateKeepsTheNodesSDP(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	caller := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)
	repeatAfter := make(chan time.Duration, 1)
	callee := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz, func(p *phone, srv *sipgo.Server) {
		srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
			if !req.To().Params.Has("tag") {
				p.onInvite(req, tx)
				return
			}
			res := p.reinviteResponse(req)
			_ = tx.Respond(res)
			if res.StatusCode != sip.StatusOK {
				return
			}
			select {
			case d := <-repeatAfter:
				time.Sleep(d)
				_ = tx.Respond(res) // as if the ACK was lost (RFC 3261 13.3.1.4)
			default:
			}
		})
	})
	callee.register(t, s.proxy.sipAddr)
	c := connect(t, caller, callee, s.proxy.sipAddr)
	// The first re-INVITE's 200 is repeated past the proxy's transaction
	// linger of 5 s.
	repeatAfter <- 6 * time.Second

	first, retransmitted := reinviteWatchingRepeats(t, c, "sendonly", 15*time.Second)
	if first.StatusCode != sip.StatusOK {
		t.Fatalf("re-INVITE answered %s", first.StartLine())
	}
	if err := caller.useAnswer(first.Body()); err != nil {
		t.Fatal(err)
	}
	again := receiveWithin(t, "the 200 repeated after the proxy's transaction ended", retransmitted, 10*time.Second)
	if string(again.Body()) != string(first.Body()) {
		t.Fatalf("the repeated 200 carries\n%s\nwant what the first one carried\n%s", again.Body(), first.Body())
	}
	if err := caller.reinvite(withTimeout(t, 5*time.Second), c.out, "sendrecv"); err != nil {
		t.Fatalf("taking the call off hold: %v", err)
	}
	stillTalking(t, c)
}
