package node

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// A session that never gets its final answer (its proxy died between the
// offer and the answer, or the release was lost) is ended after the setup
// timeout and its units come back; an answered one, and one still within
// the timeout, stay.
func TestUnansweredSessionIsReaped(t *testing.T) {
	media := newFakeMedia()
	n, err := New(Config{ID: "n", CapacityUnits: 10, SetupTimeout: 300 * time.Millisecond}, zerolog.Nop(), prometheus.NewRegistry(), nil, media)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.reapUnanswered(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	offer := func(callID string) string {
		t.Helper()
		r := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: callID, Sdp: []byte("v=0")})
		if r.GetStatus() != callgridv1.Status_STATUS_OK {
			t.Fatalf("offer %s: %v", callID, r.GetStatus())
		}
		return r.GetSessionId()
	}
	answered := offer("answered")
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: answered, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("answer: %v", st)
	}
	ringing := offer("ringing")
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: ringing, Sdp: []byte("v=0"), Provisional: true}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("183: %v", st)
	}
	abandoned := offer("abandoned")
	time.Sleep(150 * time.Millisecond)
	if s := n.ledger.snapshot(); s.sessions != 3 {
		t.Fatalf("within the setup timeout: %d sessions, want 3", s.sessions)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.ledger.snapshot().sessions != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("unanswered sessions not reaped: %+v", n.ledger.snapshot())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, id := range []string{ringing, abandoned} {
		if _, ok := n.ledger.lookup(id); ok {
			t.Errorf("unanswered session %s still held", id)
		}
	}
	if _, ok := n.ledger.lookup(answered); !ok {
		t.Error("the answered session was reaped")
	}
	if s := n.ledger.snapshot(); s.used != 1 {
		t.Errorf("%d units used, want the answered call's 1", s.used)
	}
}
