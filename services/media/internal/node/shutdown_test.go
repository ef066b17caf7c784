package node

import (
	"context"
	"fmt"
	"testing"
	"time"

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
	js := c.JetStream()
	for i := range previous {
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
	if status, err := calls.Status(ctx); err != nil || status.Values() != previous {
		t.Fatalf("seeded calls bucket: %v, %v", status, err)
	}

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
