package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// A call answered while the events stream refuses every event, with
// events queued ahead of it, has its record written at once: each of
// those events is retried for seconds, and a record waiting behind them
// is a call nobody hangs up should the node die meanwhile.
func TestCallRecordIsWrittenWhileTheEventsStreamFails(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	n := writerOn(t, c, prometheus.NewRegistry(), calls)
	if err := c.JetStream().DeleteStream(context.Background(), bus.EventsStream); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		n.writer.event("media_timeout", bus.SubjectMediaTimeout, &callgridv1.MediaTimeout{
			CallId: fmt.Sprintf("other-%d", i), SessionId: fmt.Sprintf("other-%d", i), NodeId: "n", UnixMs: time.Now().UnixMilli(),
		})
	}
	answeredHere(t, n, "s1", "c1")
	key := fleet.CallKey("n", "s1")
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for recordGone(calls, key) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the answered call's record was written %v after the answer, held up by the failing events stream (gone still: %v)", took.Round(100*time.Millisecond), recordGone(calls, key))
	}
}

// With records on a lane of their own, a record's removal still waits for
// its call's end to be out: a call ended while the events stream refuses
// its end keeps its record, for the node's next run or a proxy to end it,
// rather than have no end at all.
func TestCallRecordStaysWhileItsEndIsNotOut(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	n := writerOn(t, c, prometheus.NewRegistry(), calls)
	key := fleet.CallKey("n", "s1")
	answeredHere(t, n, "s1", "c1")
	eventually(t, 10*time.Second, "the call's record written", func() bool { return !recordGone(calls, key) })
	if err := c.JetStream().DeleteStream(context.Background(), bus.EventsStream); err != nil {
		t.Fatal(err)
	}
	s, ok := n.ledger.release("s1")
	if !ok {
		t.Fatal("the call was not held")
	}
	n.endReleased(s, "bye", false)

	flushed, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.writer.flush(flushed); err != nil {
		t.Fatal(err)
	}
	if recordGone(calls, key) {
		t.Error("the record of a call whose end never went out was removed")
	}
}
