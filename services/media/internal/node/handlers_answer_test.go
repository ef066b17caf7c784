package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	media := newSwitchingMedia()
	n, err := New(Config{ID: "n", CapacityUnits: 10, PassthroughCost: 1, TranscodeCost: 8}, zerolog.Nop(), prometheus.NewRegistry(), nil, media)
	if err != nil {
		t.Fatal(err)
	}
	media.node = n
	media.answerTranscodes = true
	ctx := context.Background()
	offer := func(callID string) string {
		t.Helper()
		r := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: callID, Sdp: []byte("v=0")})
		if r.GetStatus() != callgridv1.Status_STATUS_OK {
			t.Fatalf("offer %s: %v", callID, r.GetStatus())
		}
		return r.GetSessionId()
	}
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
