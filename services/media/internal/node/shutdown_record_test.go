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

// recordsThatStay is a calls bucket whose removals are lost, as one is
// when the bus goes while the node stops.
type recordsThatStay struct{ jetstream.KeyValue }

func (recordsThatStay) Delete(context.Context, string, ...jetstream.KVDeleteOpt) error {
	return errors.New("call record removal lost")
}

// A call the node ends at shutdown whose record outlives it is handed
// over by the node's next run, which publishes its end: the run that
// ended it must not have published one too.
func TestCallEndedAtShutdownIsNotEndedAgainAtTheNextStart(t *testing.T) {
	tb := startBus(t)
	ctx := context.Background()
	c := connect(t, tb, "first-run")
	if _, err := c.EnsureEventsStream(ctx); err != nil {
		t.Fatal(err)
	}
	calls, err := fleet.OpenCallsBucket(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	first, err := New(Config{ID: "n", CapacityUnits: 10}, zerolog.Nop(), prometheus.NewRegistry(), c, newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	first.writer.calls = recordsThatStay{calls}
	call := &session{id: "s1", callID: "c1", answered: time.Now().Add(-time.Second),
		dialog: &callgridv1.Dialog{CallId: "c1", CallerTag: "a", CalleeTag: "b", CallerContact: "sip:alice@127.0.0.1:5070"}}
	data, err := proto.Marshal(&callgridv1.CallRecord{NodeId: "n", SessionId: call.id, CallId: call.callID, Dialog: call.dialog, AnsweredUnixMs: call.answered.UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	key := fleet.CallKey("n", call.id)
	if _, err := calls.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}

	// What closeAll does for the call, then the writer's flush at the end
	// of Run, each write made once.
	first.finish(call, "shutdown", &callgridv1.MediaQuality{}, true)
	stopped, stop := context.WithCancel(ctx)
	stop()
	first.writer.run(stopped)
	if _, err := calls.Get(ctx, key); err != nil {
		t.Fatalf("the record did not outlive the call: %v", err)
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
	if got := eventCount(t, c, bus.SubjectMediaTimeout); got != 2 {
		t.Fatalf("%d hang-up requests, want one at shutdown and one at the handover", got)
	}
}
