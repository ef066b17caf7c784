package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// removalsThatHang is a calls bucket whose removals hang until their
// context ends (JetStream KV not answering). It keeps the time of the
// first call made to it and the deadline of every removal.
type removalsThatHang struct {
	jetstream.KeyValue
	mu        sync.Mutex
	first     time.Time
	deadlines []time.Time // the zero time for a removal with none
}

func (r *removalsThatHang) called() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first.IsZero() {
		r.first = time.Now()
	}
}

func (r *removalsThatHang) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	r.called()
	return r.KeyValue.Create(ctx, key, value, opts...)
}

func (r *removalsThatHang) Delete(ctx context.Context, _ string, _ ...jetstream.KVDeleteOpt) error {
	r.called()
	deadline, _ := ctx.Deadline()
	r.mu.Lock()
	r.deadlines = append(r.deadlines, deadline)
	r.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// The handover's bound holds for all of it: a record's removal, or the
// reaper lock's release, under way as the bound comes must end with it,
// not seconds later, or a hanging calls bucket keeps the node from
// serving past the bound.
func TestHandoverBoundCoversTheRemovalUnderWay(t *testing.T) {
	tb := startBus(t)
	c, calls := eventsAndCalls(t, tb)
	seedAnsweredCalls(t, c, calls, 1)
	hanging := &removalsThatHang{KeyValue: calls}
	n := handoverNode(t, tb, prometheus.NewRegistry(), hanging)
	n.handoverFor = 3 * time.Second

	n.handOverPreviousCalls(context.Background())
	hanging.mu.Lock()
	defer hanging.mu.Unlock()
	bound := hanging.first.Add(n.handoverFor)
	if len(hanging.deadlines) == 0 {
		t.Fatal("the handover removed nothing")
	}
	for i, d := range hanging.deadlines {
		if d.IsZero() || d.After(bound) {
			t.Errorf("removal %d of %d bounded by %v, %v past the handover's bound", i+1, len(hanging.deadlines), d, d.Sub(bound))
		}
	}
}
