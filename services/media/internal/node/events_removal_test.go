package node

import (
	"context"
	"errors"
	"sync"
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

// removalsThatFail is a calls bucket whose next failures removals fail
// (JetStream KV failing while the events stream works) and whose later
// ones go through.
type removalsThatFail struct {
	jetstream.KeyValue
	mu       sync.Mutex
	failures int
}

func (r *removalsThatFail) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	r.mu.Lock()
	fail := r.failures > 0
	r.failures--
	r.mu.Unlock()
	if fail {
		return errors.New("call record removal lost")
	}
	return r.KeyValue.Delete(ctx, key, opts...)
}

// writerOn is a node "n" of registry reg on c writing its calls bucket
// through calls, with its writer running until the test ends.
func writerOn(t *testing.T, c *bus.Client, reg prometheus.Registerer, calls jetstream.KeyValue) *Node {
	t.Helper()
	n, err := New(Config{ID: "n", CapacityUnits: 10}, zerolog.Nop(), reg, c, newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	n.writer.calls = calls
	running, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.writer.run(running) }()
	t.Cleanup(func() { stop(); <-done })
	return n
}

// eventsAndCalls connects to tb with the events stream and the calls
// bucket made.
func eventsAndCalls(t *testing.T, tb *testBus) (*bus.Client, jetstream.KeyValue) {
	t.Helper()
	c := connect(t, tb, "observer")
	if _, err := c.EnsureEventsStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls, err := fleet.OpenCallsBucket(context.Background(), c, 0)
	if err != nil {
		t.Fatal(err)
	}
	return c, calls
}

func recordGone(calls jetstream.KeyValue, key string) bool {
	_, err := calls.Get(context.Background(), key)
	return errors.Is(err, jetstream.ErrKeyNotFound)
}

// A call whose record removal fails once, and goes through when the
// writer tries again, is counted once in the talk-time histogram and has
// one end event: the retry does not end it again.
func TestCallWhoseRecordRemovalIsRetriedIsCountedOnce(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	reg := prometheus.NewRegistry()
	n := writerOn(t, c, reg, &removalsThatFail{KeyValue: calls, failures: 1})

	call := recordedCall(t, calls)
	n.finish(call, "bye", &callgridv1.MediaQuality{}, false)
	eventually(t, 10*time.Second, "the record removed on the retry", func() bool {
		return recordGone(calls, fleet.CallKey("n", call.id))
	})
	if got := eventCount(t, c, bus.SubjectCallEnded); got != 1 {
		t.Errorf("%d call_ended events, want 1", got)
	}
	if got := callDurations(t, reg)["bye"]; got.count != 1 {
		t.Errorf("call counted %d times in the talk-time histogram, want once", got.count)
	}
}

// A call whose record removal fails for longer than the writer's retries
// of one write (the calls bucket failing for seconds while the events
// stream works) still has its record removed while the node runs. Left in
// the bucket, the record would have the node's next run hang the ended
// call up again, publish a second end (node_down, talk time up to the
// restart) and count the call in the talk-time histogram a second time.
func TestCallWhoseRecordOutlastsTheWriteRetriesIsNotEndedAgainByTheNextRun(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	first := writerOn(t, c, prometheus.NewRegistry(), &removalsThatFail{KeyValue: calls, failures: writeAttempts})

	call := recordedCall(t, calls)
	first.finish(call, "bye", &callgridv1.MediaQuality{}, false)
	key := fleet.CallKey("n", call.id)
	deadline := time.Now().Add(3 * writeRetryMax)
	for !recordGone(calls, key) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}

	// The node restarts.
	reg := prometheus.NewRegistry()
	next, err := New(Config{ID: "n", AdvertiseAddress: "127.0.0.1", CapacityUnits: 10, HeartbeatInterval: testInterval},
		testLogger(t), reg, connect(t, tb, "media-n"), newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := next.Run(runCtx); err != nil {
			t.Errorf("node: %v", err)
		}
	}()
	// It serves once its handover is over.
	eventually(t, 10*time.Second, "the next run serving", func() bool { return probeDelete(c, "n") == nil })
	cancel()
	next.StopNow()
	<-done

	if got := callDurations(t, reg)["node_down"]; got.count != 0 {
		t.Errorf("the next run counted the ended call again: %d calls, %v s of talk time", got.count, got.sum)
	}
	if got := eventCount(t, c, bus.SubjectCallEnded); got != 1 {
		t.Errorf("%d call_ended events for the call, want 1", got)
	}
	if got := eventCount(t, c, bus.SubjectMediaTimeout); got != 0 {
		t.Errorf("%d hang-up requests for a call that had ended, want none", got)
	}
}

// A removal kept for the background (keepRemoving) is retried out of the
// queue's order, after writes queued behind it. A later call under the
// same key (session ids come from the proxy, derived from Call-ID, From
// tag and CSeq; a retried INVITE or a re-claim brings the same id back)
// that has its record written meanwhile keeps it: the background retry
// must not delete it, or nobody would hang that call up should the node
// die.
func TestRemovalRetryLeavesTheRecordOfALaterCallWithTheSameKey(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	n := writerOn(t, c, prometheus.NewRegistry(), &removalsThatFail{KeyValue: calls, failures: writeAttempts})

	old := recordedCall(t, calls)
	key := fleet.CallKey("n", old.id)
	n.finish(old, "bye", &callgridv1.MediaQuality{}, false)
	eventually(t, 10*time.Second, "the old call's end out", func() bool { return eventCount(t, c, bus.SubjectCallEnded) == 1 })

	// A new call under the same session id is offered and answered here.
	ctx := context.Background()
	r := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: "c2", SessionId: old.id, Sdp: []byte("v=0")})
	if r.GetStatus() != callgridv1.Status_STATUS_OK {
		t.Fatalf("offer: %v", r.GetStatus())
	}
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: old.id, Sdp: []byte("v=0"),
		Dialog: &callgridv1.Dialog{CallId: "c2", CallerTag: "x", CalleeTag: "y"}}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("answer: %v", st)
	}
	eventually(t, 10*time.Second, "the new call's record written", func() bool {
		e, err := calls.Get(context.Background(), key)
		return err == nil && len(e.Value()) > 0 && containsCall(e.Value(), "c2")
	})
	deadline := time.Now().Add(3 * removalRetryInterval)
	for time.Now().Before(deadline) {
		if recordGone(calls, key) {
			_, held := n.ledger.lookup(old.id)
			t.Fatalf("the record of live call c2 (held by the node: %v) was deleted by the background removal of the ended call's record under the same key", held)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsCall(data []byte, callID string) bool {
	rec := new(callgridv1.CallRecord)
	if err := proto.Unmarshal(data, rec); err != nil {
		return false
	}
	return rec.GetCallId() == callID
}
