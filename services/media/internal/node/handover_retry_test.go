package node

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/pkg/bus"
)

// readsThatFail is a calls bucket whose next failures reads fail (a
// JetStream KV hiccup) and whose later ones go through; reads counts them.
type readsThatFail struct {
	jetstream.KeyValue
	mu       sync.Mutex
	failures int
	reads    int
}

func (r *readsThatFail) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	r.mu.Lock()
	r.reads++
	fail := r.failures > 0
	r.failures--
	r.mu.Unlock()
	if fail {
		return nil, errors.New("call record read lost")
	}
	return r.KeyValue.Get(ctx, key)
}

func (r *readsThatFail) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reads
}

// handoverNode is node "n" on tb with registry reg, not yet serving,
// whose calls bucket is calls.
func handoverNode(t *testing.T, tb *testBus, reg prometheus.Registerer, calls jetstream.KeyValue) *Node {
	t.Helper()
	n, err := New(Config{ID: "n", CapacityUnits: 10}, testLogger(t), reg, connect(t, tb, "media-n"), newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	n.writer.calls = calls
	return n
}

// A handover of the previous run's calls that fails part way (here a read
// of the calls bucket) is tried again before the node serves: nobody else
// would hang those calls up, as to the proxies the node never left, and
// its next run may be weeks away, past the records' expiry.
func TestFailedHandoverIsRetriedBeforeServing(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	const previous = 3
	seedAnsweredCalls(t, c, calls, previous)
	n := handoverNode(t, tb, prometheus.NewRegistry(), &readsThatFail{KeyValue: calls, failures: 1})

	n.handOverPreviousCalls(context.Background())
	if got := eventCount(t, c, bus.SubjectMediaTimeout); got != previous {
		t.Errorf("%d of %d previous calls handed over to be hung up", got, previous)
	}
	if got := eventCount(t, c, bus.SubjectCallEnded); got != previous {
		t.Errorf("%d of %d previous calls ended", got, previous)
	}
	if left := recordsOf(t, calls, "n"); left != 0 {
		t.Errorf("%d records left after the handover, want none", left)
	}
}

// A call the handover published the events of but could not remove the
// record of is taken again by the retry: its events go out again with the
// same bytes, which the stream stores once, and its talk time is not
// counted a second time.
func TestHandoverRetriedAfterAFailedRemovalCountsTheCallOnce(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	seedAnsweredCalls(t, c, calls, 1)
	reg := prometheus.NewRegistry()
	n := handoverNode(t, tb, reg, &removalsThatFail{KeyValue: calls, failures: 1})

	n.handOverPreviousCalls(context.Background())
	if left := recordsOf(t, calls, "n"); left != 0 {
		t.Errorf("%d records left after the handover, want none", left)
	}
	if got := eventCount(t, c, bus.SubjectCallEnded); got != 1 {
		t.Errorf("%d call_ended events for the call, want 1", got)
	}
	if got := eventCount(t, c, bus.SubjectMediaTimeout); got != 1 {
		t.Errorf("%d hang-up requests for the call, want 1", got)
	}
	if got := callDurations(t, reg)["node_down"]; got.count != 1 {
		t.Errorf("the handed-over call counted %d times, want once", got.count)
	}
}

// A handover that keeps failing is tried handoverAttempts times, then the
// node goes on to serve with the rest still recorded: nothing hands them
// over while it serves (see handOverPreviousCalls).
func TestHandoverRetriesAreBounded(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	seedAnsweredCalls(t, c, calls, 1)
	failing := &readsThatFail{KeyValue: calls, failures: 1 << 30}
	n := handoverNode(t, tb, prometheus.NewRegistry(), failing)

	start := time.Now()
	n.handOverPreviousCalls(context.Background())
	if took := time.Since(start); took > handoverRetryFor {
		t.Errorf("the handover took %v, beyond its bound", took)
	}
	if got := failing.count(); got != handoverAttempts {
		t.Errorf("%d attempts, want %d", got, handoverAttempts)
	}
	if left := recordsOf(t, calls, "n"); left != 1 {
		t.Errorf("%d records left after the failed handover, want the 1", left)
	}
}

// recordsOf counts the call records of node in calls.
func recordsOf(t *testing.T, calls jetstream.KeyValue, node string) int {
	t.Helper()
	lister, err := calls.ListKeysFiltered(context.Background(), node+".*")
	if err != nil {
		t.Fatal(err)
	}
	k := 0
	for range lister.Keys() {
		k++
	}
	return k
}

// bucketHiccup is a calls bucket whose next getFailures reads and next
// deleteFailures removals fail (JetStream KV failing for a moment).
type bucketHiccup struct {
	jetstream.KeyValue
	mu                          sync.Mutex
	getFailures, deleteFailures int
}

func (b *bucketHiccup) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	b.mu.Lock()
	fail := b.getFailures > 0
	b.getFailures--
	b.mu.Unlock()
	if fail {
		return nil, errors.New("call record read lost")
	}
	return b.KeyValue.Get(ctx, key)
}

func (b *bucketHiccup) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	b.mu.Lock()
	fail := b.deleteFailures > 0
	b.deleteFailures--
	b.mu.Unlock()
	if fail {
		return errors.New("removal lost")
	}
	return b.KeyValue.Delete(ctx, key, opts...)
}

// The first handover attempt fails reading a record, and the release of
// the reaper lock it took fails too (the same bucket hiccup). The retry
// finds that fresh lock and takes it again as its own: taken for another
// replica's, the handover would count as done with nothing handed over,
// and the previous run's call would never be hung up while its record
// stays.
func TestHandoverRetryTakesAgainTheReaperLockItLeft(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	seedAnsweredCalls(t, c, calls, 1)
	reg := prometheus.NewRegistry()
	n := handoverNode(t, tb, reg, &bucketHiccup{KeyValue: calls, getFailures: 1, deleteFailures: 1})

	n.handOverPreviousCalls(context.Background())
	if got := eventCount(t, c, bus.SubjectMediaTimeout); got != 1 {
		t.Errorf("%d hang-up requests for the previous run's call, want 1", got)
	}
	if got := eventCount(t, c, bus.SubjectCallEnded); got != 1 {
		t.Errorf("%d call_ended events for the previous run's call, want 1", got)
	}
	if left := recordsOf(t, calls, "n"); left != 0 {
		t.Errorf("%d records left after the handover reported success, want none", left)
	}
}
