package node

import (
	"context"
	"testing"
	"time"

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
