package fleet

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// putCall records call session of node in kv.
func putCall(t *testing.T, kv jetstream.KeyValue, node, session string) {
	t.Helper()
	data, err := proto.Marshal(&callgridv1.CallRecord{NodeId: node, SessionId: session, CallId: "c-" + session, AnsweredUnixMs: time.Now().UnixMilli()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), CallKey(node, session), data); err != nil {
		t.Fatal(err)
	}
}

// An OrphanTaker tried again once its node serves (a handover too large
// to finish before) finds records of the node's new calls under the same
// id: it takes only those written before its first attempt, and a new
// call's record that replaced an old one under the same key stays.
func TestOrphanTakerTakesOnlyRecordsFromBeforeItsFirstAttempt(t *testing.T) {
	h := newClaimHarness(t, ClaimConfig{})
	ctx := context.Background()
	kv, err := OpenCallsBucket(ctx, h.client, 0)
	if err != nil {
		t.Fatal(err)
	}
	putCall(t, kv, "n", "old")
	putCall(t, kv, "n", "reused")
	taker := NewOrphanTaker(kv, "n")
	cut := errors.New("cut short")
	if _, err := taker.Take(ctx, func(context.Context, *callgridv1.CallRecord) error { return cut }); !errors.Is(err, cut) {
		t.Fatalf("first attempt: %v, want it cut short", err)
	}
	// The node serves: a new call, and one under a session id reused.
	putCall(t, kv, "n", "new")
	putCall(t, kv, "n", "reused")

	var taken []string
	if _, err := taker.Take(ctx, func(_ context.Context, rec *callgridv1.CallRecord) error {
		taken = append(taken, rec.GetSessionId())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(taken) != 1 || taken[0] != "old" {
		t.Errorf("took %v, want only the old call", taken)
	}
	for _, session := range []string{"new", "reused"} {
		if _, err := kv.Get(ctx, CallKey("n", session)); err != nil {
			t.Errorf("record of new call %s: %v", session, err)
		}
	}
}
