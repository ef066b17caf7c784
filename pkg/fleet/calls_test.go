package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// slowBucket is a calls bucket on a bus that turns slow after a few reads:
// the read stalls until the caller's context ends, and is then made with
// that (expired) context, as a read on a loaded JetStream would be.
type slowBucket struct {
	jetstream.KeyValue
	gets     atomic.Int64
	fastGets int64
}

func (b *slowBucket) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if b.gets.Add(1) > b.fastGets {
		<-ctx.Done()
	}
	return b.KeyValue.Get(ctx, key)
}

// ClaimOrphans that runs out of time part way (a proxy's reaper bounds it
// by orphanClaimTimeout) says so, and takes nothing: a caller that took
// the error for "no calls" would release the lock, nobody would come back
// for the rest, and those calls would never be hung up.
func TestClaimOrphansCutShortFailsAndTakesNothing(t *testing.T) {
	h := newClaimHarness(t, ClaimConfig{})
	ctx := context.Background()
	kv, err := OpenCallsBucket(ctx, h.client, 0)
	if err != nil {
		t.Fatal(err)
	}
	const total = 10
	for i := range total {
		data, err := proto.Marshal(&callgridv1.CallRecord{NodeId: "dead", SessionId: fmt.Sprint("s", i), CallId: fmt.Sprint("c", i), AnsweredUnixMs: time.Now().UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, CallKey("dead", fmt.Sprint("s", i)), data); err != nil {
			t.Fatal(err)
		}
	}
	slow := &slowBucket{KeyValue: kv, fastGets: 3}
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	records, err := ClaimOrphans(cctx, slow, "dead")

	left := 0
	lister, lerr := kv.ListKeysFiltered(ctx, "dead.*")
	if lerr != nil {
		t.Fatal(lerr)
	}
	for range lister.Keys() {
		left++
	}
	if err == nil {
		t.Fatalf("ClaimOrphans cut short by its context: %d of %d records, no error, %d records left in the bucket that nobody will claim",
			len(records), total, left)
	}
	if left != total {
		t.Fatalf("ClaimOrphans cut short removed %d of %d records and returned none (%v)", total-left, total, err)
	}
	// Tried again, it takes them all.
	records, err = ClaimOrphans(ctx, kv, "dead")
	if err != nil || len(records) != total {
		t.Fatalf("claim again: %d records, %v; want %d", len(records), err, total)
	}
}

// TakeOrphans removes a record only once its taker has dealt with it: a
// taker that fails (or dies) part way leaves the calls it had not taken for
// the next one, and none of those it had.
func TestTakeOrphansLeavesWhatItDidNotTake(t *testing.T) {
	h := newClaimHarness(t, ClaimConfig{})
	ctx := context.Background()
	kv, err := OpenCallsBucket(ctx, h.client, 0)
	if err != nil {
		t.Fatal(err)
	}
	const total = 6
	for i := range total {
		data, err := proto.Marshal(&callgridv1.CallRecord{NodeId: "n", SessionId: fmt.Sprint("s", i), CallId: fmt.Sprint("c", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, CallKey("n", fmt.Sprint("s", i)), data); err != nil {
			t.Fatal(err)
		}
	}
	errBusAway := errors.New("bus away")
	seen := map[string]bool{}
	taken, err := TakeOrphans(ctx, kv, "n", func(_ context.Context, rec *callgridv1.CallRecord) error {
		if len(seen) == total/2 {
			return errBusAway
		}
		seen[rec.GetSessionId()] = true
		return nil
	})
	if !errors.Is(err, errBusAway) || taken != total/2 {
		t.Fatalf("first take: %d taken, %v; want %d and the taker's error", taken, err, total/2)
	}
	taken, err = TakeOrphans(ctx, kv, "n", func(_ context.Context, rec *callgridv1.CallRecord) error {
		if seen[rec.GetSessionId()] {
			t.Errorf("call %s taken twice", rec.GetSessionId())
		}
		seen[rec.GetSessionId()] = true
		return nil
	})
	if err != nil || taken != total-total/2 || len(seen) != total {
		t.Fatalf("second take: %d taken, %v, %d calls seen in all; want %d, nil, %d", taken, err, len(seen), total-total/2, total)
	}
}
