package sipproxy

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// fullEarlyControl is a node with no room to transcode a provisional
// answer, and room by the final one; it keeps the answers it was sent.
type fullEarlyControl struct {
	refusingControl
	nodeSDP []byte
	mu      sync.Mutex
	answers []*callgridv1.AnswerRequest
}

func (c *fullEarlyControl) Answer(_ context.Context, node string, req *callgridv1.AnswerRequest) (*callgridv1.AnswerReply, error) {
	c.mu.Lock()
	c.answers = append(c.answers, req)
	c.mu.Unlock()
	if req.GetProvisional() {
		return nil, &bus.StatusError{Op: "answer", NodeID: node, Status: callgridv1.Status_STATUS_FULL}
	}
	return &callgridv1.AnswerReply{Status: callgridv1.Status_STATUS_OK, Sdp: c.nodeSDP}, nil
}

// TestRefusedReliableEarlyAnswerIsAnsweredInThe2xx: the callee answers in
// a reliable 183 (RFC 3262) that the node refuses, so the caller gets the
// 183 without SDP, and the 2xx then carries none. Before, the 2xx went on
// without SDP and the node never heard an answer: the caller's offer went
// unanswered and the session stayed unanswered on the node, with no
// media. Now the 2xx passes the 183's answer to the node as final and
// brings the caller the node's answer.
func TestRefusedReliableEarlyAnswerIsAnsweredInThe2xx(t *testing.T) {
	ctrl := &fullEarlyControl{nodeSDP: []byte("v=0\r\no=- 7 1 IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 21000 RTP/AVP 0\r\n")}
	p := startProxy(t, testConfig(), WithMedia(MediaOptions{Control: ctrl}))
	log := testLogger()
	invite := aliceInvites("early-unanchored", 1, "")
	c := &call{req: invite, serverLog: &log}
	c.media = &callMedia{sess: mediaSession{session: "s1", node: "n1"}, phase: phaseOffered, dialog: &callgridv1.Dialog{CallId: "early-unanchored"}}

	calleeSDP := []byte("v=0\r\no=callee 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\n")
	progress := sip.NewResponseFromRequest(invite, sip.StatusSessionInProgress, "Session Progress", calleeSDP)
	progress.To().Params.Add("tag", "b1")
	ct := sip.ContentTypeHeader("application/sdp")
	progress.AppendHeader(&ct)
	progress.AppendHeader(sip.NewHeader("Require", "100rel"))
	progress.AppendHeader(sip.NewHeader("RSeq", "1"))
	upProgress := progress.Clone()
	p.mediaProvisional(c, progress, upProgress)
	if len(upProgress.Body()) != 0 {
		t.Fatalf("the refused 183 reaches the caller with %q", upProgress.Body())
	}

	ok := sip.NewResponseFromRequest(invite, sip.StatusOK, "OK", nil)
	ok.To().Params.Add("tag", "b1")
	upOK := ok.Clone()
	if err := p.mediaAnswered(c, ok, upOK); err != nil {
		t.Fatalf("media answered: %v", err)
	}
	ctrl.mu.Lock()
	defer ctrl.mu.Unlock()
	if n := len(ctrl.answers); n != 2 || ctrl.answers[1].GetProvisional() || !bytes.Equal(ctrl.answers[1].GetSdp(), calleeSDP) {
		t.Fatalf("the node heard %d answers; want the 183's refused, then its SDP again as final", n)
	}
	if !bytes.Equal(upOK.Body(), ctrl.nodeSDP) {
		t.Fatalf("the caller's 200 carries %q, want the node's answer to its offer", upOK.Body())
	}
}
