package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// gatedMedia is fakeMedia whose Open waits for the gate.
type gatedMedia struct {
	*fakeMedia
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedMedia) Open(ctx context.Context, p OpenParams) ([]byte, error) {
	g.entered <- struct{}{}
	<-g.gate
	return g.fakeMedia.Open(ctx, p)
}

// An offer the proxy stops waiting for, for any reason (here its caller
// gave up), is released on the node: the node may have reserved units
// before the reply could come.
func TestOfferWithoutReplyIsReleased(t *testing.T) {
	tb := startBus(t)
	media := &gatedMedia{fakeMedia: newFakeMedia(), entered: make(chan struct{}, 1), gate: make(chan struct{})}
	n := startNodeOn(t, tb, "n", 10, media)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{})
	eventually(t, 5*time.Second, "node in view", func() bool { return p.view.Has("n") })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := p.claimer.Offer(ctx, &callgridv1.OfferRequest{CallId: "gave-up", Sdp: []byte("v=0")})
		errc <- err
	}()
	<-media.entered
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a cancelled claim succeeded")
	}
	close(media.gate)
	eventually(t, 5*time.Second, "the session released", func() bool { return n.ledger.snapshot().sessions == 0 })
	if s := n.ledger.snapshot(); s.used != 0 {
		t.Fatalf("%d units still used", s.used)
	}
}

// lateOpenMedia is fakeMedia whose Open for call "slow" finishes only once
// openGate closes, after the requester has given up (the node is loaded:
// the reply comes too late), and whose Close for call "blocker" holds the node's delete
// subscription until unblock closes.
type lateOpenMedia struct {
	*fakeMedia
	blockerEntered chan struct{}
	unblock        chan struct{}
	openGate       chan struct{}
	mu             sync.Mutex
	blockerID      string
}

func (m *lateOpenMedia) Open(ctx context.Context, p OpenParams) ([]byte, error) {
	if p.CallID == "slow" {
		<-m.openGate
	}
	if p.CallID == "blocker" {
		m.mu.Lock()
		m.blockerID = p.SessionID
		m.mu.Unlock()
	}
	return m.fakeMedia.Open(ctx, p)
}

func (m *lateOpenMedia) Close(id string) (*callgridv1.MediaQuality, error) {
	m.mu.Lock()
	blocker := id == m.blockerID
	m.mu.Unlock()
	if blocker {
		close(m.blockerEntered)
		<-m.unblock
	}
	return m.fakeMedia.Close(id)
}

// callEndedEvents lists the call_ended events in the stream, in order.
func callEndedEvents(t *testing.T, c *bus.Client) []*callgridv1.CallEnded {
	t.Helper()
	ctx := context.Background()
	stream, err := c.JetStream().Stream(ctx, bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*callgridv1.CallEnded
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil || msg.Subject != bus.SubjectCallEnded {
			continue
		}
		ev := new(callgridv1.CallEnded)
		if err := proto.Unmarshal(msg.Data, ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// A claim whose first node answers too late moves on to the next node with
// the same session id, and releases the session on the first. That release
// publishes no call_ended: consumers key ends on session_id and keep the
// first, so an end from the first node would throw away the real call's
// end, with its talk time, from the second.
func TestReleasedOfferThatTimedOutPublishesNoEnd(t *testing.T) {
	tb := startBus(t)
	tb.interval = time.Second // keep both nodes in view on a loaded machine
	slow := &lateOpenMedia{fakeMedia: newFakeMedia(), blockerEntered: make(chan struct{}), unblock: make(chan struct{}), openGate: make(chan struct{})}
	a := startNodeOn(t, tb, "a", 100, slow) // more free units: always tried first
	startNode(t, tb, "b", 10)
	// Runs before the nodes stop, should the test end early.
	var openOnce, unblockOnce sync.Once
	openNow := func() { openOnce.Do(func() { close(slow.openGate) }) }
	unblockNow := func() { unblockOnce.Do(func() { close(slow.unblock) }) }
	t.Cleanup(func() { openNow(); unblockNow() })
	p := startProxy(t, tb, "p", fleet.ClaimConfig{AttemptTimeout: 200 * time.Millisecond})
	eventually(t, 10*time.Second, "both nodes in view", func() bool { return p.view.Has("a") && p.view.Has("b") })

	// Hold node a's delete subscription inside the engine, so the release
	// of the timed-out offer is handled after that offer has opened.
	blocker := new(callgridv1.OfferReply)
	if err := p.client.Request(context.Background(), "offer", bus.MediaSubject("a", bus.OpOffer),
		&callgridv1.OfferRequest{CallId: "blocker", Sdp: []byte("v=0")}, blocker); err != nil || blocker.GetStatus() != callgridv1.Status_STATUS_OK {
		t.Fatalf("blocker offer: %v %v", err, blocker)
	}
	data, err := proto.Marshal(&callgridv1.DeleteRequest{SessionId: blocker.GetSessionId(), Cause: "bye"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.client.Conn().Publish(bus.MediaSubject("a", bus.OpDelete), data); err != nil {
		t.Fatal(err)
	}
	select {
	case <-slow.blockerEntered:
	case <-time.After(5 * time.Second):
		t.Fatal("blocker delete never reached the engine")
	}

	reply, err := p.claimer.Offer(context.Background(), &callgridv1.OfferRequest{CallId: "slow", Sdp: []byte("v=0"), SessionId: "sess-x"})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if reply.GetNodeId() != "b" || reply.GetSessionId() != "sess-x" {
		t.Fatalf("claim landed on %s as %s, want b as sess-x", reply.GetNodeId(), reply.GetSessionId())
	}
	openNow()
	// Node a opened the session after its requester gave up.
	eventually(t, 5*time.Second, "node a to open the late offer", func() bool {
		_, ok := a.ledger.lookup("sess-x")
		return ok
	})
	unblockNow()
	// The claimer's release reaches node a and ends its copy.
	eventually(t, 10*time.Second, "node a to release the late offer", func() bool {
		_, ok := a.ledger.lookup("sess-x")
		return !ok
	})

	// The real call: answered on b, talks, hangs up.
	ctx := context.Background()
	if _, err := p.claimer.Answer(ctx, "b", &callgridv1.AnswerRequest{SessionId: "sess-x", Sdp: []byte("v=0")}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.claimer.Delete(ctx, "b", &callgridv1.DeleteRequest{SessionId: "sess-x", Cause: "bye"}); err != nil {
		t.Fatal(err)
	}
	var first *callgridv1.CallEnded
	eventually(t, 10*time.Second, "node b's end of the call", func() bool {
		first = nil
		found := false
		for _, ev := range callEndedEvents(t, p.client) {
			if ev.GetSessionId() != "sess-x" {
				continue
			}
			if first == nil {
				first = ev
			}
			if ev.GetNodeId() == "b" {
				found = true
			}
		}
		return found
	})
	if first.GetNodeId() != "b" || first.GetCause() != "bye" {
		t.Fatalf("first call_ended for the live call's session %s is from node %s, cause %q: a consumer keeping the first end bills the call as never talked",
			first.GetSessionId(), first.GetNodeId(), first.GetCause())
	}
}
