package sipproxy

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// answerStallingNode is fakeNode whose answer to a 2xx waits until release
// closes, after saying so on stalled: the test's CANCEL then reaches the
// caller's transaction before the 2xx does.
type answerStallingNode struct {
	fakeNode
	stalled chan struct{}
	release chan struct{}
}

func (n *answerStallingNode) Answer(ctx context.Context, node string, req *callgridv1.AnswerRequest) (*callgridv1.AnswerReply, error) {
	if !req.GetProvisional() {
		close(n.stalled)
		<-n.release
	}
	return n.fakeNode.Answer(ctx, node, req)
}

// TestCancelBeforeRelayed2xxHangsUpCallee: the callee answers as the
// caller cancels, and the CANCEL reaches the caller's transaction first
// (here while the node takes the 2xx's answer): the caller gets 487 (RFC
// 3261 9.2) and the 2xx can no longer go up. The proxy took the call for
// answered, leaving the callee in a call nobody was on, ringing its 2xx
// until it gave up, and the media session open. Now the callee is hung up
// (ACK and BYE), and the session released as cancelled.
func TestCancelBeforeRelayed2xxHangsUpCallee(t *testing.T) {
	node := &answerStallingNode{fakeNode: *anchoredForkNode(), stalled: make(chan struct{}), release: make(chan struct{})}
	p := startProxy(t, trustedConfig(), WithMedia(MediaOptions{Control: node, RequestTimeout: 10 * time.Second}))
	callee := addRawContact(t, p, "callee")
	caller := newPeer(t, "caller")
	invite := offerInvite(caller)
	call := startCall(t, caller, p.Addr("udp"), invite)
	inv := callee.invite(t)
	callee.respond(t, p, inv, sip.StatusRinging, nil)
	call.waitStatus(t, sip.StatusRinging)

	callee.respond(t, p, inv, sip.StatusOK, calleeSDP("callee"))
	select {
	case <-node.stalled:
	case <-time.After(5 * time.Second):
		t.Fatal("the 2xx's answer never reached the node")
	}
	if res := caller.do(t, p.Addr("udp"), cancelFor(invite)); res.StatusCode != sip.StatusOK {
		t.Fatalf("cancel: %d", res.StatusCode)
	}
	call.waitStatus(t, sip.StatusRequestTerminated)
	close(node.release)

	if callee.next(t, 3*time.Second, func(m sip.Message) bool { r, ok := m.(*sip.Request); return ok && r.Method == sip.BYE }) == nil {
		t.Fatal("the callee, whose 2xx the caller never got, was not hung up")
	}
	waitFor(t, "the media session released", func() bool {
		node.mu.Lock()
		defer node.mu.Unlock()
		return len(node.deleted) == 1 && node.deleted[0] == "cancel"
	})
	if r := call.answer(callee.tag); r != nil {
		t.Fatal("the caller got the 2xx after its 487")
	}
	noPumpsLeft(t, p)
}
