package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
)

// slowReads is a calls bucket whose every read takes delay (a loaded
// JetStream).
type slowReads struct {
	jetstream.KeyValue
	delay time.Duration
}

func (s slowReads) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(s.delay):
	}
	return s.KeyValue.Get(ctx, key)
}

// A handover with more calls than its bound lets it hand over before the
// node serves goes on once the node serves, until every call of the
// previous run is handed over: the proxies never take the records of a
// node that serves, and its next run may come after their expiry, so the
// calls left would never be hung up. The calls of the new run are not the
// handover's.
func TestLargeHandoverHandsOverEveryCallOnceServing(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	const previous = 100
	seedAnsweredCalls(t, c, calls, previous)
	n, err := New(Config{ID: "n", AdvertiseAddress: "127.0.0.1", CapacityUnits: 10, HeartbeatInterval: testInterval},
		testLogger(t), prometheus.NewRegistry(), connect(t, tb, "media-n"), newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	n.handoverFor = 3 * time.Second
	n.openCalls = func(context.Context) (jetstream.KeyValue, error) {
		return slowReads{KeyValue: calls, delay: 50 * time.Millisecond}, nil
	}
	runNode(t, n)
	eventually(t, 30*time.Second, "the node serving", func() bool { return probeDelete(c, "n") == nil })
	if left := recordsOf(t, calls, "n"); left == 0 {
		t.Fatal("the handover was not cut short by its bound: the test shows nothing")
	}
	answeredHere(t, n, "live", "c-live")
	liveKey := fleet.CallKey("n", "live")
	eventually(t, 10*time.Second, "the live call's record written", func() bool {
		_, err := calls.Get(context.Background(), liveKey)
		return err == nil
	})

	deadline := time.Now().Add(60 * time.Second)
	for recordsOf(t, calls, "n") > 1 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := recordsOf(t, calls, "n") - 1; left != 0 {
		t.Errorf("%d of %d previous calls never handed over", left, previous)
	}
	if got := eventCount(t, c, bus.SubjectMediaTimeout); got != previous {
		t.Errorf("%d hang-up requests, want one for each of the %d previous calls", got, previous)
	}
	if _, err := calls.Get(context.Background(), liveKey); errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Error("the handover took the record of a call of the new run")
	}
}
