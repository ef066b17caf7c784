package bus

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// An event published again, as a writer does when the stream's
// acknowledgement was lost, is stored once; another event is stored too.
func TestPublishEventRetryIsStoredOnce(t *testing.T) {
	c, _ := connectTestBus(t, prometheus.NewRegistry())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := c.EnsureEventsStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ended := &callgridv1.CallEnded{CallId: "c1", SessionId: "s1", NodeId: "n1", Cause: "bye", DurationSeconds: 61, UnixMs: 1700000000000}
	for range 2 {
		if err := c.PublishEvent(ctx, "call_ended", SubjectCallEnded, ended); err != nil {
			t.Fatal(err)
		}
	}
	other := &callgridv1.CallEnded{CallId: "c2", SessionId: "s2", NodeId: "n1", Cause: "bye", DurationSeconds: 61, UnixMs: 1700000000000}
	if err := c.PublishEvent(ctx, "call_ended", SubjectCallEnded, other); err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d events, want 2 (a retried call end stored once, another call's end stored)", info.State.Msgs)
	}
}
