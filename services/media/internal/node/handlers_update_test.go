package node

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// The node charges, in its ledger and its gauge, the transcoding that a
// re-INVITE starts, and gives it back when another one stops it.
func TestUpdateThatStartsTranscodingIsCharged(t *testing.T) {
	media := newFakeMedia()
	n, err := New(Config{ID: "n", CapacityUnits: 10, PassthroughCost: 1, TranscodeCost: 8}, zerolog.Nop(), prometheus.NewRegistry(), nil, media)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	offer := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0")})
	id := offer.GetSessionId()
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: id, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("answer: %v", st)
	}
	update := func(transcodes bool) {
		t.Helper()
		media.mu.Lock()
		media.updateTranscodes = transcodes
		media.mu.Unlock()
		if st := n.handleUpdate(ctx, &callgridv1.UpdateRequest{SessionId: id, Leg: callgridv1.Leg_LEG_A, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
			t.Fatalf("update: %v", st)
		}
	}
	check := func(what string, used int, transcoded float64) {
		t.Helper()
		if s := n.ledger.snapshot(); s.used != used || testutil.ToFloat64(n.metrics.transcoded) != transcoded {
			t.Fatalf("%s: %d units used, gauge %v; want %d and %v", what, s.used, testutil.ToFloat64(n.metrics.transcoded), used, transcoded)
		}
	}
	check("answered without transcoding", 1, 0)
	update(true)
	check("an update started transcoding", 8, 1)
	update(true)
	check("a second such update", 8, 1)
	update(false)
	check("an update stopped transcoding", 1, 0)
	update(true)
	// The far end rejected that offer: the rollback gives the units back.
	if st := n.handleUpdate(ctx, &callgridv1.UpdateRequest{SessionId: id, Leg: callgridv1.Leg_LEG_A, Rollback: true}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("rollback: %v", st)
	}
	check("a rejected offer rolled back", 1, 0)
	update(true)
	if st := n.handleDelete(ctx, &callgridv1.DeleteRequest{SessionId: id}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("delete: %v", st)
	}
	check("deleted", 0, 0)
}

// A codec switch the engine follows mid-call (an endpoint sending another
// codec of its answer) is charged and given back like an update's.
func TestCodecSwitchChangingTranscodingIsCharged(t *testing.T) {
	n, err := New(Config{ID: "n", CapacityUnits: 10, PassthroughCost: 1, TranscodeCost: 8}, zerolog.Nop(), prometheus.NewRegistry(), nil, newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0")}).GetSessionId()
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: id, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("answer: %v", st)
	}
	check := func(what string, used int, transcoded float64) {
		t.Helper()
		if s := n.ledger.snapshot(); s.used != used || testutil.ToFloat64(n.metrics.transcoded) != transcoded {
			t.Fatalf("%s: %d units used, gauge %v; want %d and %v", what, s.used, testutil.ToFloat64(n.metrics.transcoded), used, transcoded)
		}
	}
	n.HandleTranscodingChange(id, true)
	check("switched to a codec that transcodes", 8, 1)
	n.HandleTranscodingChange(id, false)
	check("switched back", 1, 0)
	n.HandleTranscodingChange("no-such-session", true)
	check("an unknown session", 1, 0)
}
