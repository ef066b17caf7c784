package fleet

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

const testInterval = 100 * time.Millisecond

// claimHarness is a proxy's claimer over a fleet of fake nodes: their
// statuses are written to the bucket by hand, and each serves (or not)
// what a test makes it.
type claimHarness struct {
	t       *testing.T
	client  *bus.Client
	view    *View
	claimer *Claimer
	reg     *prometheus.Registry
	put     func(nodeID string)
}

func newClaimHarness(t *testing.T, cfg ClaimConfig) *claimHarness {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	c, err := bus.Connect(context.Background(), bus.Config{URL: srv.URL()}, "proxy", zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	kv, err := OpenBucket(context.Background(), c, testInterval, 0)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	v := NewView(c, kv, testInterval, zerolog.Nop(), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = v.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h := &claimHarness{t: t, client: c, view: v, claimer: NewClaimer(c, v, cfg, zerolog.Nop(), reg), reg: reg}
	h.put = func(nodeID string) {
		t.Helper()
		data, err := proto.Marshal(&callgridv1.NodeStatus{NodeId: nodeID, CapacityTotal: 100, UpdatedUnixMs: time.Now().UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(context.Background(), nodeID, data); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// node puts nodeID in the fleet view; its status is kept fresh until the
// test ends, so the view does not drop it as silent.
func (h *claimHarness) node(nodeID string) {
	h.t.Helper()
	h.put(nodeID)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(testInterval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				h.put(nodeID)
			}
		}
	}()
	h.t.Cleanup(func() { close(stop); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for !h.view.Has(nodeID) {
		if time.Now().After(deadline) {
			h.t.Fatalf("node %s never reached the view", nodeID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// subscribe serves op on nodeID with f, which gets each request's raw
// message.
func (h *claimHarness) subscribe(nodeID string, op bus.MediaOp, f func(*nats.Msg)) {
	h.t.Helper()
	sub, err := h.client.Conn().Subscribe(bus.MediaSubject(nodeID, op), f)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.client.Conn().Flush(); err != nil {
		h.t.Fatal(err)
	}
}

// countDeletes counts the deletes sent to nodeID, answering each with
// UNKNOWN_SESSION as a node that holds nothing would.
func (h *claimHarness) countDeletes(nodeID string) *atomic.Int64 {
	var n atomic.Int64
	reply, err := proto.Marshal(&callgridv1.DeleteReply{Status: callgridv1.Status_STATUS_UNKNOWN_SESSION})
	if err != nil {
		h.t.Fatal(err)
	}
	h.subscribe(nodeID, bus.OpDelete, func(m *nats.Msg) {
		n.Add(1)
		_ = m.Respond(reply)
	})
	return &n
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An offer to a node that is still in the view but no longer serves (it
// died without a goodbye) reached nobody: nothing was reserved, and no
// release is sent after it, where one that timed out is released.
func TestOfferThatReachedNobodyIsNotReleased(t *testing.T) {
	h := newClaimHarness(t, ClaimConfig{AttemptTimeout: 50 * time.Millisecond})
	h.node("dead")
	deadDeletes := h.countDeletes("dead")
	_, err := h.claimer.Offer(context.Background(), &callgridv1.OfferRequest{CallId: "c1", Sdp: []byte("v=0")})
	if !errors.Is(err, ErrNoMediaCapacity) || !errors.Is(err, bus.ErrNoResponders) {
		t.Fatalf("offer to a dead node: %v", err)
	}

	// A node that takes the offer and never answers: its release is sent,
	// and by then the dead node's would long have gone out, had there
	// been one.
	h.node("slow")
	h.subscribe("slow", bus.OpOffer, func(*nats.Msg) {})
	slowDeletes := h.countDeletes("slow")
	if _, err := h.claimer.Offer(context.Background(), &callgridv1.OfferRequest{CallId: "c2", Sdp: []byte("v=0")}); !errors.Is(err, ErrNoMediaCapacity) {
		t.Fatalf("offer to a dead and a silent node: %v", err)
	}
	eventually(t, 5*time.Second, "the timed-out offer released", func() bool { return slowDeletes.Load() == 1 })
	if n := deadDeletes.Load(); n != 0 {
		t.Fatalf("%d releases sent to a node no offer reached", n)
	}
}

// Close stops the releases still being retried: none outlives it, so a
// proxy stopping does not leave them running on a closed bus client.
func TestCloseStopsPendingReleases(t *testing.T) {
	h := newClaimHarness(t, ClaimConfig{AttemptTimeout: 50 * time.Millisecond})
	h.node("silent")
	// Takes offers and deletes and answers neither: the release is
	// retried for releaseRetryFor.
	h.subscribe("silent", bus.OpOffer, func(*nats.Msg) {})
	var deletes atomic.Int64
	h.subscribe("silent", bus.OpDelete, func(*nats.Msg) { deletes.Add(1) })
	if _, err := h.claimer.Offer(context.Background(), &callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0")}); !errors.Is(err, ErrNoMediaCapacity) {
		t.Fatalf("offer to a silent node: %v", err)
	}
	eventually(t, 5*time.Second, "the release sent", func() bool { return deletes.Load() >= 1 })
	// Close waits for the release goroutines, so its return is their end.
	closed := make(chan struct{})
	go func() { defer close(closed); h.claimer.Close() }()
	select {
	case <-closed:
	case <-time.After(releaseRetryFor / 2):
		t.Fatal("Close still waiting for a release being retried")
	}
}

// A claim its caller gives up on counts the nodes it tried, not the ones
// it would have tried.
func TestAbandonedClaimCountsTheNodesTried(t *testing.T) {
	h := newClaimHarness(t, ClaimConfig{AttemptTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, id := range []string{"a", "b", "c"} {
		h.node(id)
		h.countDeletes(id)
		// The first offer to arrive anywhere makes the caller give up.
		h.subscribe(id, bus.OpOffer, func(*nats.Msg) { cancel() })
	}
	if _, err := h.claimer.Offer(ctx, &callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0")}); err == nil {
		t.Fatal("an abandoned claim succeeded")
	}
	var sum float64
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "callgrid_media_claim_attempts" {
			sum = mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	if sum != 1 {
		t.Fatalf("attempts recorded: %v, want the 1 node tried", sum)
	}
}
