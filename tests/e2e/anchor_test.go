package e2e

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// Tone frequencies: each direction gets its own, so a test can tell the
// far side's audio from an echo of its own.
const (
	callerHz = 1000.0
	calleeHz = 600.0
)

// stack is one NATS, one media node and one proxy.
type stack struct {
	nats  *natsServer
	node  *mediaNode
	proxy *proxyNode
}

func startStack(t *testing.T, po proxyOpts, mo mediaOpts) *stack {
	t.Helper()
	n := startNATS(t)
	node := startMedia(t, n, "media-a", mo)
	po.nodes = 1
	return &stack{nats: n, node: node, proxy: startProxy(t, n, "proxy-a", po)}
}

// call is an answered call between an Opus caller and a PCMU callee.
type call struct {
	caller, callee *phone
	out            *sipgo.DialogClientSession
	in             *sipgo.DialogServerSession
	invite         *sip.Request // as the callee got it
}

func (c *call) callID() string { return c.out.InviteRequest.CallID().Value() }

// placeCall registers bob (PCMU) and has alice (Opus) call him through
// proxy, then waits for audio both ways.
func placeCall(t *testing.T, proxy string) *call {
	t.Helper()
	caller := newPhone(t, alice, opusCodec(t), 111, 101, callerHz)
	callee := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz)
	callee.register(t, proxy)
	return connect(t, caller, callee, proxy)
}

// connect has caller call the registered callee through proxy, then waits
// for audio both ways.
func connect(t *testing.T, caller, callee *phone, proxy string) *call {
	t.Helper()
	out, err := caller.dial(withTimeout(t, 15*time.Second), proxy, callee.user.name)
	if err != nil {
		t.Fatalf("%s calls %s: %v", caller.user.name, callee.user.name, err)
	}
	c := &call{
		caller: caller, callee: callee, out: out,
		invite: receiveWithin(t, "invite at callee", callee.invites, 5*time.Second),
		in:     receiveWithin(t, "answer at callee", callee.answered, 5*time.Second),
	}
	callee.rtp.waitTone(t, "callee", callerHz)
	caller.rtp.waitTone(t, "caller", calleeHz)
	return c
}

// waitCallEnded waits for the call-ended event of callID.
func waitCallEnded(t *testing.T, events <-chan *callgridv1.CallEnded, callID string) *callgridv1.CallEnded {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.GetCallId() == callID {
				return ev
			}
		case <-deadline:
			t.Fatalf("no call-ended event for %s", callID)
			return nil
		}
	}
}

// checkQuality asserts both legs carried media and scored sanely.
func checkQuality(t *testing.T, ev *callgridv1.CallEnded) {
	t.Helper()
	for name, leg := range map[string]*callgridv1.LegQuality{"a": ev.GetQuality().GetLegA(), "b": ev.GetQuality().GetLegB()} {
		if leg.GetPacketsReceived() < 5 || leg.GetPacketsSent() < 5 {
			t.Errorf("leg %s carried too little: %v", name, leg)
		}
		if leg.GetMos() < 3 || leg.GetMos() > 4.5 {
			t.Errorf("leg %s mos %.2f out of the sane range", name, leg.GetMos())
		}
	}
	if ev.GetDurationSeconds() <= 0 {
		t.Errorf("duration %v, want positive", ev.GetDurationSeconds())
	}
}

// TestAnchoredCallTranscodesOpusToPCMU is the whole call flow: a digest
// registered PCMU callee, an Opus caller, media through the node (which
// transcodes), tones each way, DTMF each way, hold and unhold, and a BYE
// from the caller that frees the node's session and ports.
func TestAnchoredCallTranscodesOpusToPCMU(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	ended := s.nats.callEnded(t)
	started := s.nats.callIDsOn(t, bus.SubjectCallStarted)
	answered := s.nats.callIDsOn(t, bus.SubjectCallAnswered)
	c := placeCall(t, s.proxy.sipAddr)
	if id := receiveWithin(t, "call-started event", started, 5*time.Second); id != c.callID() {
		t.Errorf("call-started for %q, want %q", id, c.callID())
	}
	if id := receiveWithin(t, "call-answered event", answered, 5*time.Second); id != c.callID() {
		t.Errorf("call-answered for %q, want %q", id, c.callID())
	}

	offer, err := parseSDP(c.invite.Body())
	if err != nil {
		t.Fatal(err)
	}
	if offer.addr.Port == c.caller.rtp.port() {
		t.Fatalf("callee was offered the caller's own address: media bypassed the node")
	}
	if rr := c.invite.RecordRoute(); rr == nil || !rr.Address.UriParams.Has("cg-node") || !rr.Address.UriParams.Has("cg-session") {
		t.Fatalf("record-route %v lacks the media session", c.invite.RecordRoute())
	}
	if got := s.node.gauge(t, "callgrid_media_sessions_transcoded"); got != 1 {
		t.Errorf("transcoding sessions %v, want 1", got)
	}

	c.caller.rtp.sendDigit(5)
	waitFor(t, 5*time.Second, "digit 5 at callee", func() bool { return c.callee.rtp.heardDigit(5) })
	c.callee.rtp.sendDigit(9)
	waitFor(t, 5*time.Second, "digit 9 at caller", func() bool { return c.caller.rtp.heardDigit(9) })

	ctx := withTimeout(t, 15*time.Second)
	if err := c.caller.reinvite(ctx, c.out, "sendonly"); err != nil {
		t.Fatalf("hold: %v", err)
	}
	if re := receiveWithin(t, "hold re-invite at callee", c.callee.reinvites, 5*time.Second); string(re.Body()) == "" {
		t.Fatal("hold re-invite without sdp")
	}
	c.callee.rtp.reset()
	c.callee.rtp.waitTone(t, "callee while held", callerHz)
	if err := c.caller.reinvite(ctx, c.out, "sendrecv"); err != nil {
		t.Fatalf("unhold: %v", err)
	}
	receiveWithin(t, "unhold re-invite at callee", c.callee.reinvites, 5*time.Second)
	c.caller.rtp.reset()
	c.caller.rtp.waitTone(t, "caller after unhold", calleeHz)

	if err := c.out.Bye(ctx); err != nil {
		t.Fatalf("bye: %v", err)
	}
	receiveWithin(t, "bye at callee", c.callee.byes, 5*time.Second)
	s.node.waitIdle(t)
	ev := waitCallEnded(t, ended, c.callID())
	if ev.GetCause() != "bye" {
		t.Errorf("cause %q, want bye", ev.GetCause())
	}
	checkQuality(t, ev)
}

// TestRejectedHoldKeepsTheCall: a hold the callee refuses (488 to the
// re-INVITE) leaves the call as it was (RFC 3264 §8), at the node too:
// audio still flows both ways.
func TestRejectedHoldKeepsTheCall(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	caller, callee := pcmuPair(t, alice, bob, s.proxy.sipAddr)
	c := connect(t, caller, callee, s.proxy.sipAddr)
	callee.rejectReinvites.Store(sip.StatusNotAcceptableHere)
	ctx := withTimeout(t, 15*time.Second)
	if err := caller.reinvite(ctx, c.out, "sendonly"); err == nil {
		t.Fatal("the refused hold was answered 200")
	}
	receiveWithin(t, "hold re-invite at callee", callee.reinvites, 5*time.Second)
	stillTalking(t, c)
	if err := c.out.Bye(ctx); err != nil {
		t.Fatalf("bye: %v", err)
	}
	s.node.waitIdle(t)
}

// TestGlareRejectedBothWaysKeepsTheCall: caller and callee re-INVITE at
// once and each answers the other's 491 (RFC 3261 14.1). Both offers were
// rejected, so the session stays as it was before either (RFC 3264 §8), at
// the node too: audio still flows both ways.
func TestGlareRejectedBothWaysKeepsTheCall(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	caller := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)
	var (
		c     *call
		glare atomic.Bool
	)
	callee := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz, func(p *phone, srv *sipgo.Server) {
		srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
			if !req.To().Params.Has("tag") || !glare.Load() {
				p.onInvite(req, tx)
				return
			}
			p.reinvites <- req
			// The callee's own re-INVITE is on its way as the caller's
			// arrives: each side answers the other 491.
			re := sip.NewRequest(sip.INVITE, c.invite.Contact().Address)
			re.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			re.SetBody(p.localSDP("sendrecv"))
			if res, err := c.in.Do(withTimeout(t, 5*time.Second), re); err != nil || res.StatusCode != sip.StatusRequestPending {
				t.Errorf("the callee's crossing re-INVITE: %v, %v; want 491", res, err)
			}
			_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusRequestPending, "Request Pending", nil))
		})
	})
	callee.register(t, s.proxy.sipAddr)
	c = connect(t, caller, callee, s.proxy.sipAddr)

	glare.Store(true)
	caller.rejectReinvites.Store(sip.StatusRequestPending)
	if err := caller.reinvite(withTimeout(t, 10*time.Second), c.out, "sendonly"); err == nil {
		t.Fatal("the caller's hold was answered 200")
	}
	receiveWithin(t, "the caller's re-INVITE at the callee", callee.reinvites, 5*time.Second)
	stillTalking(t, c)
	if err := c.out.Bye(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("bye: %v", err)
	}
	s.node.waitIdle(t)
}

// TestCalleeHangsUpAnchoredCall: the BYE from the callee's side (the node
// reached through the callee's route set) frees the session too.
func TestCalleeHangsUpAnchoredCall(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	ended := s.nats.callEnded(t)
	c := placeCall(t, s.proxy.sipAddr)
	if err := c.in.Bye(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("bye from callee: %v", err)
	}
	receiveWithin(t, "bye at caller", c.caller.byes, 5*time.Second)
	s.node.waitIdle(t)
	checkQuality(t, waitCallEnded(t, ended, c.callID()))
}

// TestLateOfferCall: an INVITE without SDP. The callee's 2xx carries the
// offer, which claims the session; the caller answers in the ACK. Audio
// flows both ways through the node, and the callee's BYE (whose route set
// could not name the node) still frees the session.
func TestLateOfferCall(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	caller := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)
	callee := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz)
	callee.register(t, s.proxy.sipAddr)
	out, err := caller.dialLate(withTimeout(t, 15*time.Second), s.proxy.sipAddr, "bob")
	if err != nil {
		t.Fatalf("late-offer call: %v", err)
	}
	in := receiveWithin(t, "answer at callee", callee.answered, 5*time.Second)
	offer, err := parseSDP(out.InviteResponse.Body())
	if err != nil {
		t.Fatal(err)
	}
	if offer.addr.Port == callee.rtp.port() {
		t.Fatal("caller was offered the callee's own address: media bypassed the node")
	}
	callee.rtp.waitTone(t, "callee", callerHz)
	caller.rtp.waitTone(t, "caller", calleeHz)
	if err := in.Bye(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("bye from callee: %v", err)
	}
	receiveWithin(t, "bye at caller", caller.byes, 5*time.Second)
	s.node.waitIdle(t)
}
