package sipproxy

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// stallingNode is fakeNode whose answer to early media waits until
// release closes: it holds the fork's loop while the test lines up what
// reaches the loop next.
type stallingNode struct {
	fakeNode
	stalled chan struct{}
	release chan struct{}
}

func (n *stallingNode) Answer(ctx context.Context, node string, req *callgridv1.AnswerRequest) (*callgridv1.AnswerReply, error) {
	if req.GetProvisional() {
		close(n.stalled)
		<-n.release
	}
	return n.fakeNode.Answer(ctx, node, req)
}

// TestFork2xxDueWithGiveUpReachesCaller: contacts that answer 2xx just
// after their no-answer deadline, while the loop is busy, have that
// deadline and their 2xx due at once. The 2xx came first: it goes to the
// caller (RFC 3261 16.7 step 5), not with the given-up branch to the
// abandoned-branch hang-up. Three contacts, so that a loop picking
// between the two at random loses one of them nearly every run.
func TestFork2xxDueWithGiveUpReachesCaller(t *testing.T) {
	node := &stallingNode{
		fakeNode: fakeNode{
			offerSDP:  []byte("v=0\r\no=- 1 1 IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n"),
			answerSDP: []byte("v=0\r\no=- 2 1 IN IP4 192.0.2.50\r\ns=callgrid\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\nm=audio 20002 RTP/AVP 0\r\n"),
		},
		stalled: make(chan struct{}),
		release: make(chan struct{}),
	}
	cfg := trustedConfig()
	cfg.BranchTimeout = time.Second
	p := startProxy(t, cfg, WithMedia(MediaOptions{Control: node, RequestTimeout: 10 * time.Second}))
	early := addRawContact(t, p, "early")
	late := []*rawContact{addRawContact(t, p, "late1"), addRawContact(t, p, "late2"), addRawContact(t, p, "late3")}

	caller := newPeer(t, "caller")
	invite := caller.request(sip.INVITE, "sip:bob@localhost", "alice")
	invite.SetBody([]byte("v=0\r\no=alice 1 1 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"))
	ct := sip.ContentTypeHeader("application/sdp")
	invite.AppendHeader(&ct)
	sent := time.Now()
	call := startCall(t, caller, p.Addr("udp"), invite)
	atEarly := early.invite(t)
	atLate := make([]*sip.Request, len(late))
	for i, rc := range late {
		atLate[i] = rc.invite(t)
	}

	early.respond(t, p, atEarly, sip.StatusSessionInProgress, []byte("v=0\r\no=early 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 42000 RTP/AVP 0\r\n"))
	select {
	case <-node.stalled:
	case <-time.After(5 * time.Second):
		t.Fatal("the early media never reached the node")
	}
	// Past the silent contacts' no-answer deadline, their 2xx come in
	// while the loop waits for the node.
	time.Sleep(time.Until(sent.Add(cfg.BranchTimeout + 200*time.Millisecond)))
	for i, rc := range late {
		rc.respond(t, p, atLate[i], sip.StatusOK, []byte("v=0\r\no=late 1 1 IN IP4 198.51.100.8\r\ns=-\r\nc=IN IP4 198.51.100.8\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\n"))
	}
	time.Sleep(300 * time.Millisecond)
	close(node.release)

	for _, rc := range late {
		call.waitAnswer(t, rc.tag)
	}
	noPumpsLeft(t, p)
}
