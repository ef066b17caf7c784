package sipproxy

import (
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestCallerGetsNo2xxAfter487WhenAnswerLostToCancel: when the caller's
// CANCEL reaches its transaction before the callee's 2xx is relayed, the
// proxy hangs the callee up (answerLostToCancel), and the caller's
// transaction keeps its 487: sipgo stores whatever response it is handed
// as the one Timer G retransmits, even once Completed, so a 2xx handed to
// it would reach a UDP caller whose ACK of the 487 has not come, for a
// dialog whose callee was just sent BYE.
func TestCallerGetsNo2xxAfter487WhenAnswerLostToCancel(t *testing.T) {
	node := &answerStallingNode{fakeNode: *anchoredForkNode(), stalled: make(chan struct{}), release: make(chan struct{})}
	p := startProxy(t, trustedConfig(), WithMedia(MediaOptions{Control: node, RequestTimeout: 10 * time.Second}))
	callee := addRawContact(t, p, "callee")
	caller := newUDPEnd(t)
	local := "127.0.0.1:" + strconv.Itoa(caller.port)
	sdp := "v=0\r\no=alice 1 1 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
	const callID = "lost-to-cancel-raw@test"
	head := func(method string) string {
		return " sip:bob@localhost SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-lostcancel1\r\n" +
			"Max-Forwards: 70\r\n" +
			"From: <sip:alice@localhost>;tag=caller1\r\n" +
			"To: <sip:bob@localhost>\r\n" +
			"Call-ID: " + callID + "\r\n" +
			"CSeq: 1 " + method + "\r\n"
	}
	caller.send(t, p.Addr("udp"), []byte("INVITE"+head("INVITE")+
		"Contact: <sip:alice@"+local+">\r\n"+
		"Content-Type: application/sdp\r\n"+
		"Content-Length: "+strconv.Itoa(len(sdp))+"\r\n\r\n"+sdp))
	inv := callee.invite(t)
	callee.respond(t, p, inv, sip.StatusRinging, nil)
	status := func(code int) func(sip.Message) bool {
		return func(m sip.Message) bool {
			r, ok := m.(*sip.Response)
			return ok && r.StatusCode == code
		}
	}
	if caller.next(t, 3*time.Second, status(sip.StatusRinging)) == nil {
		t.Fatal("no 180 at the caller")
	}
	callee.respond(t, p, inv, sip.StatusOK, calleeSDP("callee"))
	select {
	case <-node.stalled:
	case <-time.After(5 * time.Second):
		t.Fatal("the 2xx's answer never reached the node")
	}
	caller.send(t, p.Addr("udp"), []byte("CANCEL"+head("CANCEL")+"Content-Length: 0\r\n\r\n"))
	if caller.next(t, 3*time.Second, status(sip.StatusRequestTerminated)) == nil {
		t.Fatal("no 487 at the caller")
	}
	terminatedAt := time.Now()
	close(node.release)
	if callee.next(t, 3*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.Method == sip.BYE }) == nil {
		t.Fatal("the callee was not hung up")
	}
	// The caller's ACK of the 487 is taken as lost: the proxy retransmits
	// its final response (Timer G), which must stay the 487.
	got := caller.next(t, 4*time.Second, func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.IsSuccess() && r.CSeq() != nil && r.CSeq().MethodName == sip.INVITE
	})
	if got != nil {
		t.Fatalf("the caller got %d to its INVITE %v after the 487, while the proxy hung the callee up with BYE:\n%s",
			got.(*sip.Response).StatusCode, time.Since(terminatedAt).Round(time.Millisecond), got.String())
	}
}
