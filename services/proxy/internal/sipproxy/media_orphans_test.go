package sipproxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// The ends of a dead node's calls reach the events stream however full
// the proxy's event queue is: a node that dies takes all its calls with
// it, thousands at once, and the record the reaper claims was each call's
// last trace.
func TestDeadNodesCallEndsAreAllPublished(t *testing.T) {
	url := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := bus.Connect(ctx, bus.Config{URL: url}, "proxy", testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	if _, err := client.EnsureEventsStream(ctx); err != nil {
		t.Fatal(err)
	}
	calls, err := fleet.OpenCallsBucket(ctx, client, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(testConfig(), testLogger(), prometheus.NewRegistry(), WithBus(client), WithOrphanedCalls(calls, NewNodeLeaves()))
	if err != nil {
		t.Fatal(err)
	}
	// Nothing drains the queue: the server is not running.
	for len(s.events) < cap(s.events) {
		s.events <- pendingEvent{}
	}
	const dead, n = "media-dead", 3
	answered := time.Now().Add(-time.Minute).UnixMilli()
	for i := range n {
		id := fmt.Sprintf("s%d", i)
		data, err := proto.Marshal(&callgridv1.CallRecord{NodeId: dead, SessionId: id, CallId: "c" + id, AnsweredUnixMs: answered})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := calls.Put(ctx, fleet.CallKey(dead, id), data); err != nil {
			t.Fatal(err)
		}
	}

	s.reapNode(ctx, dead)

	stream, err := client.JetStream().Stream(ctx, bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	consumer, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.SubjectCallEnded}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := consumer.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ended := map[string]bool{}
	for msg := range batch.Messages() {
		ev := new(callgridv1.CallEnded)
		if err := proto.Unmarshal(msg.Data(), ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetNodeId() != dead || ev.GetCause() != "node_down" || ev.GetDurationSeconds() < 59 {
			t.Fatalf("end %v, want node %s, cause node_down, about a minute long", ev, dead)
		}
		ended[ev.GetSessionId()] = true
	}
	if len(ended) != n {
		t.Fatalf("ends published for %d of the dead node's %d calls", len(ended), n)
	}
}
