package e2e

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestRefusedReinviteAnswerKeepsTheCall: the callee answers a hold
// re-INVITE with a 200 whose SDP the node cannot take (a codec it lacks),
// and retransmits it. Neither the 200 nor its retransmission hands the
// caller the callee's own address. The node answers the caller's offer on
// its own, keeping the callee's side as it was: recvonly to the caller's
// sendonly (RFC 3264 §6.1), in a new version, and the same in both. The
// caller's audio still reaches the callee, and once it takes the call off
// hold (the callee refusing again) audio flows both ways.
func TestRefusedReinviteAnswerKeepsTheCall(t *testing.T) {
	s := startStack(t, proxyOpts{}, mediaOpts{})
	caller := newPhone(t, alice, pcmuCodec(), 0, 101, callerHz)
	var refuse atomic.Bool
	callee := newPhone(t, bob, pcmuCodec(), 0, 101, calleeHz, func(p *phone, srv *sipgo.Server) {
		srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
			if !req.To().Params.Has("tag") || !refuse.Load() {
				p.onInvite(req, tx)
				return
			}
			p.reinvites <- req
			g729 := &audioCodec{name: "G729", clock: 8000}
			res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", sdpFor(p.rtp.port(), g729, 18, 101, "recvonly"))
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			res.AppendHeader(sip.HeaderClone(&p.contact))
			_ = tx.Respond(res)
			time.Sleep(500 * time.Millisecond)
			_ = tx.Respond(res) // a retransmission (RFC 3261 13.3.1.4)
		})
	})
	callee.register(t, s.proxy.sipAddr)
	c := connect(t, caller, callee, s.proxy.sipAddr)
	refuse.Store(true)

	first, retransmitted := reinviteWatchingRepeats(t, c, "sendonly", 10*time.Second)
	leaks := func(r *sip.Response) bool {
		body := string(r.Body())
		return strings.Contains(body, "m=audio "+strconv.Itoa(callee.rtp.port())+" ") || strings.Contains(body, "G729")
	}
	if leaks(first) {
		t.Fatalf("the 200 carries the callee's own SDP:\n%s", first.Body())
	}
	before, err := parseSDP(c.out.InviteResponse.Body())
	if err != nil {
		t.Fatal(err)
	}
	held, err := parseSDP(first.Body())
	if err != nil {
		t.Fatalf("the 200's SDP: %v\n%s", err, first.Body())
	}
	if held.direction != "recvonly" || held.version <= before.version {
		t.Fatalf("the 200 answers the caller's sendonly offer with %s, version %d after %d; want recvonly in a new version\n%s",
			held.direction, held.version, before.version, first.Body())
	}
	again := receiveWithin(t, "the retransmitted 200 at the caller", retransmitted, 3*time.Second)
	if leaks(again) {
		t.Fatalf("the retransmitted 200 carries the callee's own SDP:\n%s", again.Body())
	}
	if string(again.Body()) != string(first.Body()) {
		t.Fatalf("the retransmitted 200 carries\n%s\nwant what the first one carried\n%s", again.Body(), first.Body())
	}
	if err := caller.useAnswer(first.Body()); err != nil {
		t.Fatal(err)
	}
	c.callee.rtp.reset()
	c.callee.rtp.waitTone(t, "callee, the caller on hold", callerHz)
	if err := caller.reinvite(withTimeout(t, 5*time.Second), c.out, "sendrecv"); err != nil {
		t.Fatalf("taking the call off hold: %v", err)
	}
	stillTalking(t, c)
}

// reinviteWatchingRepeats sends the caller's re-INVITE with its SDP in
// direction, bounded by limit, and returns its final response and a
// channel of that response's retransmissions as the caller receives them.
func reinviteWatchingRepeats(t *testing.T, c *call, direction string, limit time.Duration) (*sip.Response, <-chan *sip.Response) {
	t.Helper()
	re := sip.NewRequest(sip.INVITE, c.out.InviteResponse.Contact().Address)
	re.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	re.SetBody(c.caller.localSDP(direction))
	tx, err := c.out.TransactionRequest(withTimeout(t, limit), re)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tx.Terminate)
	retransmitted := make(chan *sip.Response, 4)
	tx.OnRetransmission(func(r *sip.Response) { sendOrDrop(retransmitted, r) })
	for {
		select {
		case r := <-tx.Responses():
			if !r.IsProvisional() {
				return r, retransmitted
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no final response to the re-INVITE")
		}
	}
}
