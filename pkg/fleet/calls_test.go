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

// flakyLockBucket is a calls bucket whose next readFailures reads and
// next deleteFailures removals fail: JetStream KV failing for a moment.
type flakyLockBucket struct {
	jetstream.KeyValue
	readFailures, deleteFailures atomic.Int64
}

func (b *flakyLockBucket) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if b.readFailures.Add(-1) >= 0 {
		return nil, errors.New("read lost")
	}
	return b.KeyValue.Get(ctx, key)
}

func (b *flakyLockBucket) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if b.deleteFailures.Add(-1) >= 0 {
		return errors.New("removal lost")
	}
	return b.KeyValue.Delete(ctx, key, opts...)
}

// An attempt that fails and cannot release its reaper lock either leaves
// a fresh lock, which the taker's next attempt takes again as its own
// rather than leave to "another replica": otherwise it would take nothing
// and report success. A fresh lock some other taker holds is still left
// alone.
func TestOrphanTakerTakesAgainTheReaperLockItLeft(t *testing.T) {
	h := newClaimHarness(t, ClaimConfig{})
	ctx := context.Background()
	kv, err := OpenCallsBucket(ctx, h.client, 0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(&callgridv1.CallRecord{NodeId: "n", SessionId: "s1", CallId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, CallKey("n", "s1"), data); err != nil {
		t.Fatal(err)
	}
	flaky := &flakyLockBucket{KeyValue: kv}
	flaky.readFailures.Store(1)
	flaky.deleteFailures.Store(1)
	taker := NewOrphanTaker(flaky, "n")
	count := func(context.Context, *callgridv1.CallRecord) error { return nil }

	if taken, err := taker.Take(ctx, count); err == nil || taken != 0 {
		t.Fatalf("first attempt: %d taken, %v; want none and the read's error", taken, err)
	}
	if _, err := kv.Get(ctx, reaperKeyPrefix+"n"); err != nil {
		t.Fatalf("the first attempt's lock: %v, want it left behind", err)
	}
	// Another taker, with no lock of its own, still takes the fresh lock
	// for a replica's.
	if taken, err := TakeOrphans(ctx, kv, "n", count); err != nil || taken != 0 {
		t.Fatalf("another taker: %d taken, %v; want none and nil", taken, err)
	}
	if taken, err := taker.Take(ctx, count); err != nil || taken != 1 {
		t.Fatalf("the retry: %d taken, %v; want the 1 call", taken, err)
	}
	if _, err := kv.Get(ctx, reaperKeyPrefix+"n"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the lock after the retry: %v, want it released", err)
	}
}

// A taker whose lock was taken over since (held past staleReaperLock, by
// a replica that took it for one left behind) leaves that replica's lock
// alone: it neither takes it again nor releases it.
func TestOrphanTakerLeavesALockTakenOverSince(t *testing.T) {
	h := newClaimHarness(t, ClaimConfig{})
	ctx := context.Background()
	kv, err := OpenCallsBucket(ctx, h.client, 0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(&callgridv1.CallRecord{NodeId: "n", SessionId: "s1", CallId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, CallKey("n", "s1"), data); err != nil {
		t.Fatal(err)
	}
	flaky := &flakyLockBucket{KeyValue: kv}
	flaky.readFailures.Store(1)
	flaky.deleteFailures.Store(1)
	taker := NewOrphanTaker(flaky, "n")
	count := func(context.Context, *callgridv1.CallRecord) error { return nil }
	if _, err := taker.Take(ctx, count); err == nil {
		t.Fatal("first attempt: nil, want the read's error")
	}
	lock := reaperKeyPrefix + "n"
	entry, err := kv.Get(ctx, lock)
	if err != nil {
		t.Fatal(err)
	}
	other, err := kv.Update(ctx, lock, []byte(time.Now().UTC().Format(time.RFC3339Nano)), entry.Revision())
	if err != nil {
		t.Fatal(err)
	}
	if taken, err := taker.Take(ctx, count); err != nil || taken != 0 {
		t.Fatalf("retry under another's lock: %d taken, %v; want none and nil", taken, err)
	}
	if entry, err := kv.Get(ctx, lock); err != nil || entry.Revision() != other {
		t.Fatalf("the other replica's lock after the retry: %v, %v; want it kept at revision %d", entry, err, other)
	}
	if _, err := kv.Get(ctx, CallKey("n", "s1")); err != nil {
		t.Fatalf("the call's record: %v, want it left to the lock's holder", err)
	}
}
