package sipproxy

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// anchoredForkNode is a media node for the fork tests' anchored calls.
func anchoredForkNode() *fakeNode {
	return &fakeNode{
		offerSDP:  []byte("v=0\r\no=- 1 1 IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n"),
		answerSDP: []byte("v=0\r\no=- 2 1 IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 20002 RTP/AVP 0\r\n"),
	}
}

// calleeSDP is an SDP answer from a callee named name.
func calleeSDP(name string) []byte {
	return []byte("v=0\r\no=" + name + " 1 1 IN IP4 198.51.100.8\r\ns=-\r\nc=IN IP4 198.51.100.8\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\n")
}

// offerInvite is an INVITE from the caller to bob with an SDP offer.
func offerInvite(caller *peer) *sip.Request {
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	invite.SetBody([]byte("v=0\r\no=alice 1 1 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"))
	ct := sip.ContentTypeHeader("application/sdp")
	invite.AppendHeader(&ct)
	return invite
}

// TestForkSecondAnswerWithSDPReachesCallerAfterBodilessFirst: with media
// anchored, a first fork whose 2xx brings no SDP and had no early answer
// still leaves a second fork's 2xx, SDP and all, to go upstream (RFC 3261
// 16.7 step 5), as the second fork of any call: without SDP, and without
// the session in its Record-Route, since the session is the first fork's.
func TestForkSecondAnswerWithSDPReachesCallerAfterBodilessFirst(t *testing.T) {
	node := anchoredForkNode()
	p := startProxy(t, trustedConfig(), WithMedia(MediaOptions{Control: node}))
	first, second := addRawContact(t, p, "first"), addRawContact(t, p, "second")
	caller := newPeer(t, "caller")
	call := startCall(t, caller, p.Addr("udp"), offerInvite(caller))
	atFirst, atSecond := first.invite(t), second.invite(t)
	second.respond(t, p, atSecond, sip.StatusRinging, nil)
	call.waitStatus(t, sip.StatusRinging)

	first.respond(t, p, atFirst, sip.StatusOK, nil)
	call.waitAnswer(t, first.tag)
	if second.next(t, 2*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.IsCancel() }) == nil {
		t.Fatal("no CANCEL at the second contact")
	}
	// Its 2xx crossed the CANCEL.
	second.respond(t, p, atSecond, sip.StatusOK, calleeSDP("second"))
	res := call.waitAnswer(t, second.tag)
	if len(res.Body()) != 0 {
		t.Errorf("the second fork's 2xx carries %q, want no SDP", res.Body())
	}
	for _, h := range res.GetHeaders("Record-Route") {
		if strings.Contains(h.Value(), paramSession+"=") {
			t.Errorf("the second fork's 2xx names the session in %s", h.Value())
		}
	}
	noPumpsLeft(t, p)
}

// TestForkCancelAfterAnswerLeavesCrossing2xxToCaller: a CANCEL from the
// caller after its 200 cancels nothing (RFC 3261 9.2: the INVITE has its
// final response), so a 2xx of another fork that crossed the proxy's own
// CANCEL still goes upstream (16.7 step 5) and is not hung up: the caller
// decides what becomes of that dialog.
func TestForkCancelAfterAnswerLeavesCrossing2xxToCaller(t *testing.T) {
	p := startProxy(t, trustedConfig())
	first, second := addRawContact(t, p, "first"), addRawContact(t, p, "second")
	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	call := startCall(t, caller, p.Addr("udp"), invite)
	atFirst, atSecond := first.invite(t), second.invite(t)
	second.respond(t, p, atSecond, sip.StatusRinging, nil)
	call.waitStatus(t, sip.StatusRinging)

	first.respond(t, p, atFirst, sip.StatusOK, nil)
	call.waitAnswer(t, first.tag)
	if second.next(t, 2*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.IsCancel() }) == nil {
		t.Fatal("no CANCEL at the second contact")
	}
	cancelReq := cancelFor(invite)
	cancelReq.SetDestination(p.Addr("udp"))
	if err := caller.cli.WriteRequest(cancelReq); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	second.respond(t, p, atSecond, sip.StatusOK, nil)
	call.waitAnswer(t, second.tag)
	if m := second.next(t, 500*time.Millisecond, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.Method == sip.BYE }); m != nil {
		t.Fatal("the proxy hung up the second fork's 2xx it forwarded to the caller")
	}
	noPumpsLeft(t, p)
}
