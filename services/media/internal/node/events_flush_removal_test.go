package node

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// A call ended as the node stops, whose record's removal the calls bucket
// refuses for a little longer than the removal's own retries, still has
// its record removed before the node's goodbye: the flush before it keeps
// trying for as long as it may. Left, the record would have the node's
// next run (or a proxy) end the call a second time.
func TestRemovalOwedAtTheFlushIsRetriedUntilItIsMade(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	n, err := New(Config{ID: "n", CapacityUnits: 10}, zerolog.Nop(), prometheus.NewRegistry(), c, newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	// The removal's own tries, the flush's first and the stop's last
	// one all fail; the next one would go through.
	n.writer.calls = &removalsThatFail{KeyValue: calls, failures: writeAttempts + 2}
	running, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.writer.run(running) }()

	call := recordedCall(t, calls)
	n.finish(call, "shutdown", &callgridv1.MediaQuality{}, true)
	flushed, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.writer.flush(flushed); err != nil {
		t.Errorf("flush: %v", err)
	}
	stop()
	<-done
	if !recordGone(calls, fleet.CallKey("n", call.id)) {
		t.Fatal("the record of a call whose end went out is left at the goodbye: the next run ends the call again")
	}
}
