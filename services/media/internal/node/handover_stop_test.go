package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
)

// readsThatHang is a calls bucket whose reads hang until their context
// ends (JetStream KV not answering); entered is closed at the first.
type readsThatHang struct {
	jetstream.KeyValue
	once    sync.Once
	entered chan struct{}
}

func (r *readsThatHang) Get(ctx context.Context, _ string) (jetstream.KeyValueEntry, error) {
	r.once.Do(func() { close(r.entered) })
	<-ctx.Done()
	return nil, ctx.Err()
}

// runNode runs n until the test ends or stop is called; done is closed
// when Run has returned.
func runNode(t *testing.T, n *Node) (stop context.CancelFunc, done chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Run(ctx); err != nil {
			t.Errorf("node: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); n.StopNow(); <-done })
	return cancel, done
}

// fleetWrites is how many writes the fleet bucket has ever had.
func fleetWrites(t *testing.T, c *bus.Client) uint64 {
	t.Helper()
	kv, err := fleet.OpenBucket(context.Background(), c, testInterval, 0)
	if err != nil {
		t.Fatal(err)
	}
	status, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bucket, ok := status.(*jetstream.KeyValueBucketStatus)
	if !ok {
		t.Fatalf("fleet bucket status of type %T", status)
	}
	return bucket.StreamInfo().State.LastSeq
}

// A node told to stop while it hands its previous run's calls over never
// joins the fleet: advertised, if only for a heartbeat, it would be
// offered calls it is about to refuse, and its goodbye would have the
// proxies take the records the handover left.
func TestNodeStoppedDuringTheHandoverNeverJoinsTheFleet(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	seedAnsweredCalls(t, c, calls, 1)
	hanging := &readsThatHang{KeyValue: calls, entered: make(chan struct{})}
	n, err := New(Config{ID: "n", AdvertiseAddress: "127.0.0.1", CapacityUnits: 10, HeartbeatInterval: testInterval},
		testLogger(t), prometheus.NewRegistry(), connect(t, tb, "media-n"), newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	n.openCalls = func(context.Context) (jetstream.KeyValue, error) { return hanging, nil }

	stop, done := runNode(t, n)
	select {
	case <-hanging.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the handover never read a record")
	}
	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not stop")
	}
	if got := fleetWrites(t, c); got != 0 {
		t.Errorf("the fleet bucket had %d writes from a node stopped before it served", got)
	}
	if got := eventCount(t, c, bus.SubjectNodeUp); got != 0 {
		t.Errorf("%d node_up events from a node stopped before it served", got)
	}
	if left := recordsOf(t, calls, "n"); left != 1 {
		t.Errorf("%d records left, want the 1 the handover did not get to", left)
	}
}
