package sipproxy

import (
	"bytes"
	"errors"
	"testing"

	"github.com/emiago/sipgo/sip"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// offerless2xx is the callee's 2xx to an offerless re-INVITE, carrying its
// offer, and the copy of it that would go upstream.
func offerless2xx(reinvite *sip.Request) (res, up *sip.Response) {
	offer := []byte("v=0\r\no=callee 1 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 99\r\n")
	res = sip.NewResponseFromRequest(reinvite, sip.StatusOK, "OK", offer)
	ct := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct)
	return res, res.Clone()
}

// TestOfferlessReInviteRefusedOfferGetsSessionAsOffer: a re-INVITE
// without SDP gets the offer in the 2xx (RFC 3261 14.2); when the node
// refuses that offer, the caller is owed an offer all the same, to answer
// in its ACK (13.2.1). Its 2xx went without SDP. Now it carries the
// session as it stands, from a rollback, unchanged down to its version
// (RFC 3264 §8): the caller answers it and nothing changes.
func TestOfferlessReInviteRefusedOfferGetsSessionAsOffer(t *testing.T) {
	ctrl := &answerRefusingControl{lastSDP: []byte("v=0\r\no=- 7 1 IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 21000 RTP/AVP 0\r\n")}
	p := startProxy(t, testConfig(), WithMedia(MediaOptions{Control: ctrl}))
	log := testLogger()
	reinvite := aliceInvites("offerless-refused", 2, "b1")
	c := &call{req: reinvite, serverLog: &log}
	c.media = &callMedia{sess: mediaSession{session: "s1", node: "n1"}, phase: phaseUpdate, reqLeg: callgridv1.Leg_LEG_A}

	ok, up := offerless2xx(reinvite)
	if err := p.mediaAnswered(c, ok, up); err != nil {
		t.Fatalf("media answered: %v", err)
	}
	if !bytes.Equal(up.Body(), ctrl.lastSDP) {
		t.Fatalf("the caller's 2xx carries %q, want the session in force as the offer", up.Body())
	}
	if n := ctrl.rollbacks.Load(); n != 1 {
		t.Errorf("%d rollbacks, want 1", n)
	}
	if sent := c.media.sent2xx.Load(); sent == nil || !bytes.Equal(sent.body, ctrl.lastSDP) {
		t.Error("the 2xx's retransmissions would not carry the same offer")
	}
}

// TestOfferlessReInviteWithoutSessionKeptFails: when the node refuses the
// 2xx's offer and gives no session to offer instead (the rollback fails),
// a 2xx would leave the caller nothing to answer: the re-INVITE fails
// instead, with what the node said, and the dialog keeps its session
// (RFC 3261 14.1).
func TestOfferlessReInviteWithoutSessionKeptFails(t *testing.T) {
	p := startProxy(t, testConfig(), WithMedia(MediaOptions{Control: refusingControl{}}))
	log := testLogger()
	reinvite := aliceInvites("offerless-unrolled", 2, "b1")
	c := &call{req: reinvite, serverLog: &log}
	c.media = &callMedia{sess: mediaSession{session: "s1", node: "n1"}, phase: phaseUpdate, reqLeg: callgridv1.Leg_LEG_A}

	ok, up := offerless2xx(reinvite)
	err := p.mediaAnswered(c, ok, up)
	if !errors.Is(err, errRefusingControl) {
		t.Fatalf("media answered: %v, want the node's refusal", err)
	}
	if code := p.classify(err).code; code < 400 {
		t.Fatalf("the re-INVITE would be answered %d", code)
	}
}
