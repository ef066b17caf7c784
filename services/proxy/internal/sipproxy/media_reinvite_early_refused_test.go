package sipproxy

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/emiago/sipgo/sip"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// refusingControl is a media fleet whose node refuses every request.
type refusingControl struct{}

var errRefusingControl = errors.New("refused by the test's node")

func (refusingControl) Offer(context.Context, *callgridv1.OfferRequest) (*callgridv1.OfferReply, error) {
	return nil, errRefusingControl
}
func (refusingControl) Answer(context.Context, string, *callgridv1.AnswerRequest) (*callgridv1.AnswerReply, error) {
	return nil, errRefusingControl
}
func (refusingControl) Update(context.Context, string, *callgridv1.UpdateRequest) (*callgridv1.UpdateReply, error) {
	return nil, errRefusingControl
}
func (refusingControl) Delete(context.Context, string, *callgridv1.DeleteRequest) (*callgridv1.DeleteReply, error) {
	return nil, errRefusingControl
}

// answerRefusingControl is a node that refuses every in-dialog answer and
// counts the rollbacks it is asked for; a rollback returns lastSDP.
type answerRefusingControl struct {
	refusingControl
	rollbacks atomic.Int32
	lastSDP   []byte
}

func (c *answerRefusingControl) Update(_ context.Context, _ string, req *callgridv1.UpdateRequest) (*callgridv1.UpdateReply, error) {
	if req.GetRollback() {
		c.rollbacks.Add(1)
		return &callgridv1.UpdateReply{Status: callgridv1.Status_STATUS_OK, Sdp: c.lastSDP}, nil
	}
	return nil, errRefusingControl
}

// TestRefusedReliableEarlyAnswerIsRolledBack: a re-INVITE's offer
// answered in a reliable 183 (RFC 3262), the 2xx then carrying no SDP.
// When the node refuses that 183's answer, mediaProvisional only drops
// the body; mediaAnswered sees a 2xx without SDP and returns at once. The
// node was never told to roll back, keeping the caller's offer applied and
// pending though the callee's answer never reached it, and the caller's
// 2xx carried no answer to its offer. Now the offer is rolled back at the
// 2xx, which carries the answer the caller had before.
func TestRefusedReliableEarlyAnswerIsRolledBack(t *testing.T) {
	ctrl := &answerRefusingControl{lastSDP: []byte("v=0\r\no=- 7 1 IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 21000 RTP/AVP 0\r\n")}
	p := startProxy(t, testConfig(), WithMedia(MediaOptions{Control: ctrl}))
	log := testLogger()
	reinvite := aliceInvites("early-refused", 2, "b1")
	c := &call{req: reinvite, serverLog: &log}
	c.media = &callMedia{sess: mediaSession{session: "s1", node: "n1"}, phase: phaseUpdate, reqLeg: callgridv1.Leg_LEG_A, offered: true}

	calleeSDP := []byte("v=0\r\no=callee 1 2 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 99\r\n")
	ringing := sip.NewResponseFromRequest(reinvite, sip.StatusSessionInProgress, "Session Progress", calleeSDP)
	ct := sip.ContentTypeHeader("application/sdp")
	ringing.AppendHeader(&ct)
	ringing.AppendHeader(sip.NewHeader("Require", "100rel"))
	ringing.AppendHeader(sip.NewHeader("RSeq", "1"))
	upRinging := ringing.Clone()
	p.mediaProvisional(c, ringing, upRinging)

	ok := sip.NewResponseFromRequest(reinvite, sip.StatusOK, "OK", nil)
	upOK := ok.Clone()
	if err := p.mediaAnswered(c, ok, upOK); err != nil {
		t.Fatalf("media answered: %v", err)
	}
	if n := ctrl.rollbacks.Load(); n == 0 {
		t.Errorf("the node refused the reliable 183's answer and was never told to roll back the caller's offer; the caller's 200 carries %q", upOK.Body())
	}
}

// aliceInvites is an INVITE from alice to bob as the proxy receives it,
// in the dialog of toTag (none: a new call).
func aliceInvites(callID string, seq uint32, toTag string) *sip.Request {
	inv := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: "198.51.100.7"})
	inv.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "192.0.2.10", Port: 5060,
		Params: sip.HeaderParams{{K: "branch", V: "z9hG4bKcaller"}}})
	inv.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "localhost"}, Params: sip.HeaderParams{{K: "tag", V: "a1"}}})
	to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "localhost"}}
	if toTag != "" {
		to.Params = sip.HeaderParams{{K: "tag", V: toTag}}
	}
	inv.AppendHeader(to)
	cid := sip.CallIDHeader(callID)
	inv.AppendHeader(&cid)
	inv.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: sip.INVITE})
	return inv
}
