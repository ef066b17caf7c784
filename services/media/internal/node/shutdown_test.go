package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// eventCount is how many events the events stream holds on subject.
func eventCount(t *testing.T, c *bus.Client, subject string) uint64 {
	t.Helper()
	stream, err := c.JetStream().Stream(context.Background(), bus.EventsStream)
	if err != nil {
		return 0
	}
	info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0
	}
	return info.State.Subjects[subject]
}

// A call the node still carries when it stops (the drain grace passed, or
// it was told to stop now) is hung up: its record goes with it, so the
// node asks the proxies to, as for a media timeout. A call never answered
// has no dialog to hang up and is not.
func TestCallsEndedAtShutdownAreHungUp(t *testing.T) {
	tb := startBus(t)
	n := startNode(t, tb, "n", 10)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{})
	eventually(t, 5*time.Second, "node in view", func() bool { return p.view.Has("n") })
	dialog := &callgridv1.Dialog{CallId: "call-1", CallerTag: "a", CalleeTag: "b", CallerContact: "sip:alice@127.0.0.1:5070"}
	session, _ := answeredCall(t, p, "n", dialog)
	if _, err := p.claimer.Offer(context.Background(), offerReq("ringing")); err != nil {
		t.Fatal(err)
	}

	n.stop()
	eventually(t, 5*time.Second, "both calls' end events", func() bool { return eventCount(t, p.client, bus.SubjectCallEnded) == 2 })
	if got := eventCount(t, p.client, bus.SubjectMediaTimeout); got != 1 {
		t.Fatalf("%d hang-up requests, want 1 for the answered call", got)
	}
	stream, err := p.client.JetStream().Stream(context.Background(), bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(context.Background(), bus.SubjectMediaTimeout)
	if err != nil {
		t.Fatal(err)
	}
	ev := new(callgridv1.MediaTimeout)
	if err := proto.Unmarshal(msg.Data, ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetSessionId() != session || ev.GetDialog().GetCallerContact() != dialog.GetCallerContact() {
		t.Fatalf("hang-up request %v, want session %s with its dialog", ev, session)
	}
}

// A node that comes back after a crash with more calls of its previous run
// than a fixed write queue holds hands every one of them over.
func TestHandoverOfManyPreviousCallsLosesNone(t *testing.T) {
	tb := startBus(t)
	c := connect(t, tb, "seed")
	ctx := context.Background()
	calls, err := fleet.OpenCallsBucket(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Two events go out per call: more calls than half the fixed queue.
	const previous = busQueueSize/2 + 100
	seedAnsweredCalls(t, c, calls, previous)

	// The node holds as many calls as it had: its queue has room for them.
	startNode(t, tb, "n", previous)
	var timeouts, ended uint64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		timeouts, ended = eventCount(t, c, bus.SubjectMediaTimeout), eventCount(t, c, bus.SubjectCallEnded)
		if timeouts == previous && ended == previous {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("of %d previous calls, %d hang-up requests and %d end events went out", previous, timeouts, ended)
		}
	}
}

// holdingMedia holds the first Open until release closes, and notes a
// Shutdown that comes while a request is still inside the engine.
type holdingMedia struct {
	*fakeMedia
	entered      chan struct{}
	release      chan struct{}
	enterOnce    sync.Once
	busy         atomic.Int32
	shutdownBusy atomic.Bool
}

func newHoldingMedia() *holdingMedia {
	return &holdingMedia{fakeMedia: newFakeMedia(), entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *holdingMedia) Open(ctx context.Context, p OpenParams) ([]byte, error) {
	g.busy.Add(1)
	defer g.busy.Add(-1)
	g.enterOnce.Do(func() { close(g.entered) })
	<-g.release
	return g.fakeMedia.Open(ctx, p)
}

func (g *holdingMedia) Shutdown() {
	if g.busy.Load() > 0 {
		g.shutdownBusy.Store(true)
	}
	g.fakeMedia.Shutdown()
}

// offerRaw publishes an offer to node with no deadline and returns the
// subscription its reply comes to.
func offerRaw(t *testing.T, c *bus.Client, node, callID string) *nats.Subscription {
	t.Helper()
	inbox := nats.NewInbox()
	replies, err := c.Conn().SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = replies.Unsubscribe() })
	data, err := proto.Marshal(offerReq(callID))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Conn().PublishRequest(bus.MediaSubject(node, bus.OpOffer), inbox, data); err != nil {
		t.Fatal(err)
	}
	return replies
}

// probeDelete asks node to delete an unknown session, briefly.
func probeDelete(c *bus.Client, node string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	return c.Request(ctx, "delete", bus.MediaSubject(node, bus.OpDelete), &callgridv1.DeleteRequest{SessionId: "probe"}, new(callgridv1.DeleteReply))
}

// A stopping node stops taking requests, then answers those it had already
// received (the one inside the engine and those queued behind it; the
// queued offers are told it drains, which a claimer takes to the next node
// at once) and only then shuts the engine down. Dropped, they would leave
// each proxy waiting out its attempt timeout.
func TestShutdownAnswersRequestsAlreadyReceived(t *testing.T) {
	tb := startBus(t)
	g := newHoldingMedia()
	tn := startNodeOn(t, tb, "n", 10, g)
	requester := connect(t, tb, "requester")
	eventually(t, 5*time.Second, "the node serving", func() bool { return probeDelete(requester, "n") == nil })

	inEngine := offerRaw(t, requester, "n", "in-engine")
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the first offer never reached the engine")
	}
	queued := []*nats.Subscription{offerRaw(t, requester, "n", "queued-1"), offerRaw(t, requester, "n", "queued-2")}
	// Once the server has them, they are routed to the node's offer
	// subscription, behind the offer the engine holds.
	if err := requester.Conn().Flush(); err != nil {
		t.Fatal(err)
	}

	stopped := make(chan struct{})
	go func() { defer close(stopped); tn.stop() }()
	eventually(t, 5*time.Second, "the node to stop taking requests", func() bool {
		return errors.Is(probeDelete(requester, "n"), bus.ErrNoResponders)
	})
	close(g.release)

	if msg, err := inEngine.NextMsg(5 * time.Second); err != nil {
		t.Errorf("the offer inside the engine got no reply: %v", err)
	} else if reply := new(callgridv1.OfferReply); proto.Unmarshal(msg.Data, reply) != nil || reply.GetStatus() != callgridv1.Status_STATUS_OK {
		t.Errorf("the offer inside the engine: %v, want OK (it was taken before the drain)", reply)
	}
	for i, replies := range queued {
		msg, err := replies.NextMsg(5 * time.Second)
		if err != nil {
			t.Errorf("queued offer %d got no reply: %v", i, err)
			continue
		}
		reply := new(callgridv1.OfferReply)
		if err := proto.Unmarshal(msg.Data, reply); err != nil || reply.GetStatus() != callgridv1.Status_STATUS_DRAINING {
			t.Errorf("queued offer %d: %v, %v; want DRAINING", i, reply, err)
		}
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not stop")
	}
	if g.shutdownBusy.Load() {
		t.Error("the engine was shut down with a request inside it")
	}
	if open, _ := g.counts(); open != 0 {
		t.Errorf("%d sessions left open in the engine", open)
	}
}

// The wait for requests in hand is bounded: a handler stuck in the engine
// does not keep a stopping node from ending its calls and returning.
func TestShutdownWaitsForAStuckRequestOnlySoLong(t *testing.T) {
	tb := startBus(t)
	g := newHoldingMedia()
	t.Cleanup(func() { close(g.release) })
	tn := startNodeOn(t, tb, "n", 10, g)
	tn.requestDrain = 100 * time.Millisecond
	requester := connect(t, tb, "requester")
	eventually(t, 5*time.Second, "the node serving", func() bool { return probeDelete(requester, "n") == nil })
	offerRaw(t, requester, "n", "stuck")
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the offer never reached the engine")
	}

	tn.cancel()
	tn.StopNow()
	select {
	case <-tn.done:
	case <-time.After(5 * time.Second):
		t.Fatal("a stuck request held the node from stopping")
	}
}

// A stopping node ends its calls (closeAll queues their hang-ups, ends and
// record removals) and says goodbye to the fleet only once its writer has
// made those writes. To the proxies the goodbye is a node that left: once
// orphan_grace passes, one of them claims the call records still in the
// bucket, sends BYE to both legs again and publishes a second call_ended
// (cause node_down) for each. Here the reaper acts as the node leaves, and
// finds no record.
func TestStoppingNodeRemovesItsCallRecordsBeforeLeavingTheFleet(t *testing.T) {
	tb := startBus(t)
	tb.interval = time.Second
	n := startNode(t, tb, "n", 1000)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{AttemptTimeout: 2 * time.Second})
	eventually(t, 10*time.Second, "node in view", func() bool { return p.view.Has("n") })
	ctx := context.Background()
	const answered = 200
	for i := range answered {
		callID := fmt.Sprint("call-", i)
		offer, err := p.claimer.Offer(ctx, &callgridv1.OfferRequest{CallId: callID, Sdp: []byte("v=0"), Dialog: &callgridv1.Dialog{CallId: callID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.claimer.Answer(ctx, "n", &callgridv1.AnswerRequest{SessionId: offer.GetSessionId(), Sdp: []byte("v=0")}); err != nil {
			t.Fatal(err)
		}
	}
	calls, err := fleet.OpenCallsBucket(ctx, p.client, 0)
	if err != nil {
		t.Fatal(err)
	}
	countRecords := func() int {
		lister, err := calls.ListKeysFiltered(ctx, "n.*")
		if err != nil {
			return -1
		}
		k := 0
		for range lister.Keys() {
			k++
		}
		return k
	}
	eventually(t, 10*time.Second, "every call recorded", func() bool { return countRecords() == answered && len(n.writer.ch) == 0 })

	// A proxy replica's reaper: it takes the calls of a node that left.
	taken := make(chan int, 1)
	go func() {
		select {
		case id := <-p.left:
			recs, err := fleet.ClaimOrphans(ctx, calls, id)
			if err != nil {
				t.Error(err)
			}
			taken <- len(recs)
		case <-time.After(30 * time.Second):
			taken <- -1
		}
	}()
	n.stop()
	got := <-taken
	if got < 0 {
		t.Fatal("the node never left the view")
	}
	if got > 0 {
		t.Fatalf("%d of %d calls the node ended at shutdown still had their records when it left the fleet: a reaper hangs them up and ends them again (node_down)", got, answered)
	}
}

// seedAnsweredCalls records n answered calls of node "n" in the calls
// bucket, as a run of it that crashed would have left them.
func seedAnsweredCalls(t *testing.T, c *bus.Client, calls jetstream.KeyValue, n int) {
	t.Helper()
	js := c.JetStream()
	for i := range n {
		rec := &callgridv1.CallRecord{NodeId: "n", SessionId: fmt.Sprintf("s%d", i), CallId: fmt.Sprintf("c%d", i), AnsweredUnixMs: time.Now().UnixMilli()}
		data, err := proto.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		// The bucket's own subject, published without waiting for each
		// acknowledgement: a KV put one at a time would be slow here.
		if _, err := js.PublishAsync("$KV."+bus.BucketCalls+"."+fleet.CallKey("n", rec.GetSessionId()), data); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("seeding the calls bucket timed out")
	}
	if status, err := calls.Status(context.Background()); err != nil || status.Values() != uint64(n) {
		t.Fatalf("seeded calls bucket: %v, %v", status, err)
	}
}
