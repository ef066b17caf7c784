package location

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// silentKV is a bucket whose reads time out: a bus that is connected but
// does not answer.
type silentKV struct {
	jetstream.KeyValue
	gets atomic.Int32
}

func (k *silentKV) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	k.gets.Add(1)
	return nil, nats.ErrTimeout
}

// TestKVSweepStopsWhileBusAway: with the bus not answering, a sweep gives
// up after the first AOR instead of waiting out a timeout for each, and
// still drops the lapsed bindings from memory.
func TestKVSweepStopsWhileBusAway(t *testing.T) {
	s := openKVStore(t, startNATS(t).ClientURL())
	soon := time.Now().Add(50 * time.Millisecond)
	for _, aor := range []string{"a@localhost", "b@localhost", "c@localhost"} {
		save(t, s, Binding{AOR: aor, Contact: "sip:" + aor, Expires: soon, UpdatedAt: time.Now()})
	}
	waitUntil(t, "bindings lapsed", func() bool { return len(s.local.lapsed(time.Now())) == 3 })
	kv := &silentKV{KeyValue: s.kv}
	s.kv = kv
	s.Sweep(context.Background())
	if n := kv.gets.Load(); n != 1 {
		t.Errorf("sweep read %d records from a bus that does not answer, want 1", n)
	}
	if left := s.local.lapsed(time.Now()); len(left) != 0 {
		t.Errorf("lapsed bindings still in memory for %v", left)
	}
}
