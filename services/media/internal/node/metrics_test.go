package node

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// talkTime is one cause's series of the call-duration histogram.
type talkTime struct {
	count   uint64
	sum     float64
	buckets map[float64]uint64 // upper bound: cumulative count
}

// callDurations reads the call-duration histogram from g, by cause.
func callDurations(t *testing.T, g prometheus.Gatherer) map[string]talkTime {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]talkTime{}
	for _, mf := range families {
		if mf.GetName() != "callgrid_media_call_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var cause string
			for _, l := range m.GetLabel() {
				if l.GetName() != "cause" {
					t.Fatalf("unexpected label %s", l.GetName())
				}
				cause = l.GetValue()
			}
			h := m.GetHistogram()
			tt := talkTime{count: h.GetSampleCount(), sum: h.GetSampleSum(), buckets: map[float64]uint64{}}
			for _, b := range h.GetBucket() {
				tt.buckets[b.GetUpperBound()] = b.GetCumulativeCount()
			}
			out[cause] = tt
		}
	}
	return out
}

// Every answered call is counted once, with its talk time, whichever way
// its session ends: a delete, a media timeout, the node stopping. Calls
// never answered (cancelled, reaped at the setup timeout, early media
// only) are not, nor is a session ended twice over.
func TestCallDurationCountsEachAnsweredCallOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		n, err := New(Config{ID: "n", CapacityUnits: 100}, zerolog.Nop(), reg, nil, newFakeMedia())
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		offer := func(callID string, service callgridv1.MediaService) string {
			t.Helper()
			r := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: callID, Sdp: []byte("v=0"), Service: service})
			if r.GetStatus() != callgridv1.Status_STATUS_OK {
				t.Fatalf("offer %s: %v", callID, r.GetStatus())
			}
			return r.GetSessionId()
		}
		answer := func(id string, provisional bool) {
			t.Helper()
			if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: id, Sdp: []byte("v=0"), Provisional: provisional}).GetStatus(); st != callgridv1.Status_STATUS_OK {
				t.Fatalf("answer %s: %v", id, st)
			}
		}
		del := func(id, cause string) callgridv1.Status {
			return n.handleDelete(ctx, &callgridv1.DeleteRequest{SessionId: id, Cause: cause}).GetStatus()
		}
		bridge, tone := callgridv1.MediaService_MEDIA_SERVICE_BRIDGE, callgridv1.MediaService_MEDIA_SERVICE_TONE

		hungUp := offer("hung-up", bridge)
		time.Sleep(20 * time.Second) // ringing is not talk time
		answer(hungUp, false)
		time.Sleep(90 * time.Second)
		del(hungUp, "bye")
		if st := del(hungUp, "bye"); st != callgridv1.Status_STATUS_UNKNOWN_SESSION {
			t.Fatalf("second delete: %v", st)
		}

		silent := offer("silent", bridge)
		answer(silent, false)
		time.Sleep(30 * time.Second)
		n.HandleMediaTimeout(silent, &callgridv1.MediaQuality{})
		n.HandleMediaTimeout(silent, &callgridv1.MediaQuality{})
		del(silent, "bye")

		// A built-in service answers at the offer.
		announcement := offer("announcement", tone)
		time.Sleep(10 * time.Second)
		del(announcement, "bye")

		// SIP statuses as causes collapse to their class.
		failed := offer("failed", bridge)
		answer(failed, false)
		time.Sleep(5 * time.Second)
		del(failed, "500")

		del(offer("cancelled", bridge), "cancel")
		earlyMedia := offer("early-media", bridge)
		answer(earlyMedia, true)
		time.Sleep(time.Second)
		del(earlyMedia, "487")

		abandoned := offer("abandoned", bridge)
		reapCtx, stopReaping := context.WithCancel(ctx)
		reaped := make(chan struct{})
		go func() { defer close(reaped); n.reapUnanswered(reapCtx) }()
		long := offer("long", bridge)
		answer(long, false)
		time.Sleep(time.Hour)
		stopReaping()
		<-reaped
		if _, ok := n.ledger.lookup(abandoned); ok {
			t.Fatal("the abandoned session was not reaped")
		}
		n.Drain()
		n.closeAll("shutdown")

		got := callDurations(t, reg)
		for cause, want := range map[string]struct {
			count uint64
			sum   float64
		}{
			"bye": {2, 100}, "media_timeout": {1, 30}, "shutdown": {1, 3600}, "5xx": {1, 5},
		} {
			if g := got[cause]; g.count != want.count || g.sum != want.sum {
				t.Errorf("cause %s: %d calls, %v s; want %d, %v s", cause, g.count, g.sum, want.count, want.sum)
			}
		}
		for _, cause := range []string{"cancel", "4xx", "setup_timeout"} {
			if g, ok := got[cause]; ok {
				t.Errorf("unanswered calls counted under %s: %+v", cause, g)
			}
		}
		// A 90 s call is in the two-minute bucket, not the minute one.
		if b := got["bye"].buckets; b[60] != 1 || b[120] != 2 {
			t.Errorf("bye buckets %v: want the 10 s call by 60 s and the 90 s one by 120 s", b)
		}
	})
}

// A call a crashed run of the node left behind is counted when the next
// run hands it over, with its talk time up to then.
func TestCallDurationCountsHandedOverCalls(t *testing.T) {
	tb := startBus(t)
	c := connect(t, tb, "seed")
	ctx := context.Background()
	calls, err := fleet.OpenCallsBucket(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	const talked = 90 * time.Second
	start := time.Now()
	rec := &callgridv1.CallRecord{NodeId: "n", SessionId: "s1", CallId: "c1", AnsweredUnixMs: time.Now().Add(-talked).UnixMilli()}
	data, err := proto.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := calls.Put(ctx, fleet.CallKey("n", "s1"), data); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	n, err := New(Config{ID: "n", AdvertiseAddress: "127.0.0.1", CapacityUnits: 10, HeartbeatInterval: testInterval},
		testLogger(t), reg, connect(t, tb, "media-n"), newFakeMedia())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Run(runCtx); err != nil {
			t.Errorf("node: %v", err)
		}
	}()
	eventually(t, 5*time.Second, "the handed-over call's end", func() bool { return eventCount(t, c, bus.SubjectCallEnded) == 1 })
	cancel()
	n.StopNow()
	<-done

	got := callDurations(t, reg)["node_down"]
	if got.count != 1 || got.sum < talked.Seconds() || got.sum > (talked+time.Since(start)).Seconds() {
		t.Fatalf("handed-over call counted %d times, %v s; want once, about %v", got.count, got.sum, talked.Seconds())
	}
}
