package node

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// FuzzControlRequests drives the node's handlers with arbitrary decoded
// requests: whatever arrives, the ledger never exceeds its capacity, every
// reply carries a status, and deleting what was opened frees every unit.
func FuzzControlRequests(f *testing.F) {
	f.Add(mustMarshal(&callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0"), SessionId: "s1"}), []byte{}, uint8(0))
	f.Add(mustMarshal(&callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0"), Service: 7}), []byte{1}, uint8(1))
	f.Add(mustMarshal(&callgridv1.OfferRequest{Sdp: []byte("x"), SessionId: "a.b"}), mustMarshal(&callgridv1.UpdateRequest{SessionId: "s1", Leg: 9}), uint8(2))
	f.Fuzz(func(t *testing.T, offer, follow []byte, op uint8) {
		n, err := New(Config{ID: "fuzz", CapacityUnits: 3, TranscodeCost: 2}, zerolog.Nop(), prometheus.NewRegistry(), nil, newFakeMedia())
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		var opened []string
		for range 4 {
			req := new(callgridv1.OfferRequest)
			if proto.Unmarshal(offer, req) != nil {
				return
			}
			req.SessionId = "" // let the node pick, so repeated offers are new sessions
			reply := n.handleOffer(ctx, req)
			if reply.GetStatus() == callgridv1.Status_STATUS_UNSPECIFIED {
				t.Fatal("offer reply without status")
			}
			if reply.GetStatus() == callgridv1.Status_STATUS_OK {
				opened = append(opened, reply.GetSessionId())
			}
		}
		for _, id := range opened {
			var status callgridv1.Status
			switch op % 3 {
			case 0:
				r := new(callgridv1.AnswerRequest)
				_ = proto.Unmarshal(follow, r)
				r.SessionId = id
				status = n.handleAnswer(ctx, r).GetStatus()
			case 1:
				r := new(callgridv1.UpdateRequest)
				_ = proto.Unmarshal(follow, r)
				r.SessionId = id
				status = n.handleUpdate(ctx, r).GetStatus()
			default:
				status = callgridv1.Status_STATUS_OK
			}
			if status == callgridv1.Status_STATUS_UNSPECIFIED {
				t.Fatal("reply without status")
			}
		}
		if s := n.ledger.snapshot(); s.used > s.total {
			t.Fatalf("ledger over capacity: %+v", s)
		}
		for _, id := range opened {
			n.endSession(id, "bye", false)
		}
		if s := n.ledger.snapshot(); s.used != 0 || s.sessions != 0 || s.transcoded != 0 {
			t.Fatalf("after deleting everything: %+v", s)
		}
	})
}
