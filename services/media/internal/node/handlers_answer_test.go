package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// queuedWrites takes what a node without a bus has queued for it, in order.
func queuedWrites(n *Node) []busWrite {
	var out []busWrite
	for {
		select {
		case op := <-n.writer.ch:
			out = append(out, op)
		default:
			return out
		}
	}
}

// An answer the node refuses because the transcoded call does not fit
// leaves the call unanswered: no call record, no talk time in its end
// event, and the setup timeout still ends it should its release be lost.
func TestRefusedAnswerLeavesTheCallUnanswered(t *testing.T) {
	n, _ := newTranscodingNode(t)
	ctx := context.Background()
	offer := func(callID string) string { return offerOK(t, n, callID) }
	first := offer("first")
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: first, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("first answer: %v", st)
	}
	second := offer("second")
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: second, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_FULL {
		t.Fatalf("answer beyond capacity: %v, want FULL", st)
	}
	if rec := n.ledger.callRecord(second, "n"); rec != nil {
		t.Fatalf("the refused call is recorded as answered: %v", rec)
	}
	if ids := n.ledger.unansweredSince(time.Now().Add(time.Hour)); len(ids) != 1 || ids[0] != second {
		t.Fatalf("sessions the setup timeout would end: %v, want the refused one", ids)
	}
	queuedWrites(n)
	if st := n.handleDelete(ctx, &callgridv1.DeleteRequest{SessionId: second, Cause: "503"}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("delete: %v", st)
	}
	for _, op := range queuedWrites(n) {
		switch op.kind {
		case writeEvent:
			if ev, ok := op.msg.(*callgridv1.CallEnded); ok && ev.GetDurationSeconds() != 0 {
				t.Fatalf("the refused call ended after %v s of talk", ev.GetDurationSeconds())
			}
		case writeEnd:
			t.Fatalf("removal of a call record never written: %s", op.key)
		}
	}
}

// A delete that races an answer never has the call record written after
// its removal: such a record would outlive the call, and the node's next
// start would have the proxies hang it up and publish its end again.
func TestCallRecordNeverOutlivesItsRemoval(t *testing.T) {
	n, err := New(Config{ID: "n", CapacityUnits: 10}, zerolog.Nop(), prometheus.NewRegistry(), nil, newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The window is a few instructions wide: many rounds give the two
	// goroutines many chances to interleave there.
	const rounds = 20000
	for i := range rounds {
		id := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0")}).GetSessionId()
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: id, Sdp: []byte("v=0")})
		})
		wg.Go(func() {
			<-start
			n.handleDelete(ctx, &callgridv1.DeleteRequest{SessionId: id, Cause: "cancel"})
		})
		close(start)
		wg.Wait()
		if n.ledger.snapshot().sessions != 0 {
			t.Fatalf("round %d: session left after its delete", i)
		}
		// Nothing drains the queue here but this.
		removed := false
		for _, op := range queuedWrites(n) {
			switch op.kind {
			case writeEnd:
				removed = true
			case writeRecord:
				if removed {
					t.Fatalf("round %d: call record %s written after its removal", i, op.key)
				}
			}
		}
	}
}

// A provisional answer (183 with SDP) that needs transcoding on a node
// without the units for it is refused with FULL, but the engine has
// already taken it up and transcodes the early media while the call rings
// on (the proxy only drops the early media body). The ledger charges what
// the engine does, so the node offers no room for it, and the final answer
// is refused too while the node has no units for it.
func TestRefusedProvisionalAnswerIsChargedWhatTheEngineTranscodes(t *testing.T) {
	n, media := newTranscodingNode(t)
	ctx := context.Background()
	offer := func(callID string) string { return offerOK(t, n, callID) }
	first := offer("first")
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: first, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("first answer: %v", st)
	}
	second := offer("second")
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: second, Sdp: []byte("v=0"), Provisional: true}).GetStatus(); st != callgridv1.Status_STATUS_FULL {
		t.Fatalf("183 beyond capacity: %v, want FULL", st)
	}
	s := n.ledger.snapshot()
	if media.engineTranscodes(second) && s.transcoded < 2 {
		t.Fatalf("after refusing the 183 for lack of units the engine transcodes the session anyway: engine transcodes both calls, ledger charges %d transcoded (%d of %d units used)",
			s.transcoded, s.used, s.total)
	}
	if g := testutil.ToFloat64(n.metrics.transcoded); g != float64(s.transcoded) {
		t.Fatalf("transcoded gauge %v, ledger %d", g, s.transcoded)
	}
	// The 200 OK with the same SDP does not fit either while the first
	// call holds its units, and fits once it has ended.
	final := &callgridv1.AnswerRequest{SessionId: second, Sdp: []byte("v=0")}
	if st := n.handleAnswer(ctx, final).GetStatus(); st != callgridv1.Status_STATUS_FULL {
		t.Fatalf("200 beyond capacity after a refused 183: %v, want FULL", st)
	}
	if rec := n.ledger.callRecord(second, "n"); rec != nil {
		t.Fatalf("the refused call is recorded as answered: %v", rec)
	}
	if st := n.handleDelete(ctx, &callgridv1.DeleteRequest{SessionId: first, Cause: "bye"}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("delete first: %v", st)
	}
	if st := n.handleAnswer(ctx, final).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("200 once the units are free: %v, want OK", st)
	}
	if s := n.ledger.snapshot(); s.used != 8 || s.transcoded != 1 || n.ledger.callRecord(second, "n") == nil {
		t.Fatalf("after the 200: %+v, recorded %v; want 8 units, 1 transcoded, recorded", s, n.ledger.callRecord(second, "n") != nil)
	}
}

// newTranscodingNode is a node of 10 units whose every answer transcodes
// (8 units a call).
func newTranscodingNode(t *testing.T) (*Node, *switchingMedia) {
	t.Helper()
	media := newSwitchingMedia()
	n, err := New(Config{ID: "n", CapacityUnits: 10, PassthroughCost: 1, TranscodeCost: 8}, zerolog.Nop(), prometheus.NewRegistry(), nil, media)
	if err != nil {
		t.Fatal(err)
	}
	media.node = n
	media.answerTranscodes = true
	return n, media
}

// offerOK opens a session for callID on n and returns its id.
func offerOK(t *testing.T, n *Node, callID string) string {
	t.Helper()
	r := n.handleOffer(context.Background(), &callgridv1.OfferRequest{CallId: callID, Sdp: []byte("v=0")})
	if r.GetStatus() != callgridv1.Status_STATUS_OK {
		t.Fatalf("offer %s: %v", callID, r.GetStatus())
	}
	return r.GetSessionId()
}
