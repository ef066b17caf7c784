package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// recordsThatStay is a calls bucket whose removals fail while the rest of
// the bus works.
type recordsThatStay struct{ jetstream.KeyValue }

func (recordsThatStay) Delete(context.Context, string, ...jetstream.KVDeleteOpt) error {
	return errors.New("call record removal lost")
}

// recordedCall is a call up for a second on node "n", with its record in
// calls as the node wrote it at the answer.
func recordedCall(t *testing.T, calls jetstream.KeyValue) *session {
	t.Helper()
	call := &session{id: "s1", callID: "c1", answered: time.Now().Add(-time.Second),
		dialog: &callgridv1.Dialog{CallId: "c1", CallerTag: "a", CalleeTag: "b", CallerContact: "sip:alice@127.0.0.1:5070"}}
	data, err := proto.Marshal(&callgridv1.CallRecord{NodeId: "n", SessionId: call.id, CallId: call.callID, Dialog: call.dialog, AnsweredUnixMs: call.answered.UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := calls.Put(context.Background(), fleet.CallKey("n", call.id), data); err != nil {
		t.Fatal(err)
	}
	return call
}

// A call the node ends at shutdown while the bus is gone keeps its
// record, and the node's next run, handing the call over, publishes its
// end: once, as the run that ended it could publish nothing.
func TestCallEndedWithTheBusGoneIsEndedByTheNextRun(t *testing.T) {
	tb := startBus(t)
	ctx := context.Background()
	c := connect(t, tb, "observer")
	if _, err := c.EnsureEventsStream(ctx); err != nil {
		t.Fatal(err)
	}
	calls, err := fleet.OpenCallsBucket(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	firstBus := connect(t, tb, "first-run")
	first, err := New(Config{ID: "n", CapacityUnits: 10}, zerolog.Nop(), prometheus.NewRegistry(), firstBus, newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	call := recordedCall(t, calls)

	// What closeAll does for the call, then the bus goes, then the
	// writer's flush at the end of Run, each write tried once.
	first.finish(call, "shutdown", &callgridv1.MediaQuality{}, true)
	firstBus.Close()
	stopped, stop := context.WithCancel(ctx)
	stop()
	first.writer.run(stopped)
	if _, err := calls.Get(ctx, fleet.CallKey("n", call.id)); err != nil {
		t.Fatalf("the record of a call whose end was not published is gone: %v", err)
	}

	startNode(t, tb, "n", 10)
	stream, err := c.JetStream().Stream(ctx, bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the next run's end of the call it handed over", func() bool {
		msg, err := stream.GetLastMsgForSubject(ctx, bus.SubjectCallEnded)
		if err != nil {
			return false
		}
		ev := new(callgridv1.CallEnded)
		return proto.Unmarshal(msg.Data, ev) == nil && ev.GetSessionId() == call.id && ev.GetCause() == "node_down"
	})
	if got := eventCount(t, c, bus.SubjectCallEnded); got != 1 {
		t.Fatalf("%d call_ended events for the call, want 1", got)
	}
}

// A call that ends on a running node whose calls bucket refuses the
// record's removal (JetStream KV failing, the connection up) still has its
// end published, once however often the write is retried: no later run of
// the node may come to hand it over.
func TestCallEndedIsPublishedWhenItsRecordCannotBeRemoved(t *testing.T) {
	tb := startBus(t)
	ctx := context.Background()
	c := connect(t, tb, "running")
	if _, err := c.EnsureEventsStream(ctx); err != nil {
		t.Fatal(err)
	}
	calls, err := fleet.OpenCallsBucket(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{ID: "n", CapacityUnits: 10}, zerolog.Nop(), prometheus.NewRegistry(), c, newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	n.writer.calls = recordsThatStay{calls}
	running, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); n.writer.run(running) }()

	// An ordinary hang-up (the proxy's delete after a BYE).
	n.finish(recordedCall(t, calls), "bye", &callgridv1.MediaQuality{}, false)
	eventually(t, 6*time.Second, "the call's end event", func() bool {
		return eventCount(t, c, bus.SubjectCallEnded) == 1
	})
	// Let the writer retry the removal (and the publish with it) a while.
	time.Sleep(2 * writeRetryMin)
	stop()
	<-done
	if got := eventCount(t, c, bus.SubjectCallEnded); got != 1 {
		t.Fatalf("%d call_ended events after the removal's retries, want 1", got)
	}
}
