package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/pkg/bus"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// removalsThatWait is a calls bucket whose removals wait until gate is
// closed (JetStream KV not answering); entered is closed at the first.
type removalsThatWait struct {
	jetstream.KeyValue
	gate    chan struct{}
	once    sync.Once
	entered chan struct{}
}

func (r *removalsThatWait) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	r.once.Do(func() { close(r.entered) })
	<-r.gate
	return r.KeyValue.Delete(ctx, key, opts...)
}

// The calls bucket hanging holds up its own writes only: an event of
// another call (here a media timeout a proxy must act on) goes out while
// a call record's removal waits on the bucket.
func TestHangingCallsBucketHoldsUpNoEvents(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	hanging := &removalsThatWait{KeyValue: calls, gate: make(chan struct{}), entered: make(chan struct{})}
	n := writerOn(t, c, prometheus.NewRegistry(), hanging)
	t.Cleanup(func() { close(hanging.gate) })

	n.finish(recordedCall(t, calls), "bye", &callgridv1.MediaQuality{}, false)
	select {
	case <-hanging.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the ended call's record removal never started")
	}
	n.writer.event("media_timeout", bus.SubjectMediaTimeout, &callgridv1.MediaTimeout{CallId: "c2", SessionId: "s2", NodeId: "n", UnixMs: time.Now().UnixMilli()})
	eventually(t, 10*time.Second, "the other call's media timeout published", func() bool {
		return eventCount(t, c, bus.SubjectMediaTimeout) == 1
	})
}
