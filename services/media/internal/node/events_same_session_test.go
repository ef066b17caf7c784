package node

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// answeredHere offers and answers a call under session id on n.
func answeredHere(t *testing.T, n *Node, id, callID string) {
	t.Helper()
	ctx := context.Background()
	if r := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: callID, SessionId: id, Sdp: []byte("v=0")}); r.GetStatus() != callgridv1.Status_STATUS_OK {
		t.Fatalf("offer %s: %v", callID, r.GetStatus())
	}
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: id, Sdp: []byte("v=0"),
		Dialog: &callgridv1.Dialog{CallId: callID, CallerTag: "a", CalleeTag: "b"}}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("answer %s: %v", callID, st)
	}
}

// A call is released by the ledger before its end is queued (the engine
// closes its media in between). A later call under the same session id
// can be offered, answered and have its record queued in that gap: the
// earlier call's end, queued after it, must remove only the earlier
// call's record, or nobody would hang the later call up should the node
// die.
func TestEndQueuedAfterALaterCallsRecordLeavesThatRecord(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	n := writerOn(t, c, prometheus.NewRegistry(), calls)
	const id = "s1"
	key := fleet.CallKey("n", id)

	answeredHere(t, n, id, "c1")
	eventually(t, 10*time.Second, "the first call's record written", func() bool {
		e, err := calls.Get(context.Background(), key)
		return err == nil && containsCall(e.Value(), "c1")
	})
	earlier, ok := n.ledger.release(id)
	if !ok {
		t.Fatal("the first call was not held")
	}
	answeredHere(t, n, id, "c2")
	n.endReleased(earlier, "bye", false)

	flushed, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.writer.flush(flushed); err != nil {
		t.Fatal(err)
	}
	e, err := calls.Get(context.Background(), key)
	if err != nil || !containsCall(e.Value(), "c2") {
		t.Fatalf("the record of live call c2 is gone after the end of the earlier call under its session id: %v", err)
	}
}
