package node

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// panickingOpenMedia is an engine whose Open trips a bug once.
type panickingOpenMedia struct {
	*fakeMedia
	panics bool
}

func (m *panickingOpenMedia) Open(ctx context.Context, p OpenParams) ([]byte, error) {
	if m.panics {
		m.panics = false
		panic("engine bug")
	}
	return m.fakeMedia.Open(ctx, p)
}

// The bus recovers a handler's panic and the node goes on serving, so an
// engine that panics while opening must not leave the reservation behind:
// a session stuck opening is never released, reaped or closed, and its
// units would be gone until the process restarts.
func TestOfferWhoseEngineOpenPanicsGivesItsUnitsBack(t *testing.T) {
	media := &panickingOpenMedia{fakeMedia: newFakeMedia(), panics: true}
	n, err := New(Config{ID: "n", CapacityUnits: 1, PassthroughCost: 1, TranscodeCost: 1}, zerolog.Nop(), prometheus.NewRegistry(), nil, media)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("engine panic did not reach the bus's recovery")
			}
		}()
		n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: "bug", Sdp: []byte("v=0")})
	}()
	if snap := n.ledger.snapshot(); snap.used != 0 || snap.sessions != 0 {
		t.Fatalf("after the panic: %d units used by %d sessions, want none", snap.used, snap.sessions)
	}
	if st := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: "next", Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("next offer on the 1-unit node: %v, want STATUS_OK", st)
	}
}
