package node

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

func TestDeadNodesCallsAreTakenByExactlyOneProxy(t *testing.T) {
	tb := startBus(t)
	n := startNode(t, tb, "doomed", 10)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{})
	eventually(t, 5*time.Second, "node in view", func() bool { return p.view.Has("doomed") })

	dialog := &callgridv1.Dialog{CallId: "call-1", CallerTag: "a", CalleeTag: "b", CallerContact: "sip:alice@127.0.0.1:5070"}
	if _, err := p.claimer.Offer(context.Background(), offerReq("call-2")); err != nil { // never answered
		t.Fatal(err)
	}
	session, calls := answeredCall(t, p, "doomed", dialog)

	// The node dies without a word; three replicas race for its calls.
	n.client.Conn().Close()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		taken []*callgridv1.CallRecord
	)
	for range 3 {
		wg.Go(func() {
			recs, err := fleet.ClaimOrphans(context.Background(), calls, "doomed")
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			taken = append(taken, recs...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(taken) != 1 || taken[0].GetSessionId() != session || taken[0].GetDialog().GetCallerContact() != dialog.GetCallerContact() {
		t.Fatalf("orphans taken: %v; want the one answered call, once", taken)
	}
	if recs, _ := fleet.ClaimOrphans(context.Background(), calls, "doomed"); len(recs) != 0 {
		t.Fatalf("records taken twice: %v", recs)
	}
}

// answeredCall claims and answers a call on node through p and waits for
// its call record; it returns the session and the calls bucket.
func answeredCall(t *testing.T, p *testProxy, node string, dialog *callgridv1.Dialog) (string, jetstream.KeyValue) {
	t.Helper()
	ctx := context.Background()
	offer, err := p.claimer.Offer(ctx, &callgridv1.OfferRequest{CallId: dialog.GetCallId(), Sdp: []byte("v=0"), Dialog: dialog})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.claimer.Answer(ctx, node, &callgridv1.AnswerRequest{SessionId: offer.GetSessionId(), Sdp: []byte("v=0"), Dialog: dialog}); err != nil {
		t.Fatal(err)
	}
	calls, err := fleet.OpenCallsBucket(ctx, p.client, 0)
	if err != nil {
		t.Fatal(err)
	}
	key := fleet.CallKey(node, offer.GetSessionId())
	eventually(t, 3*time.Second, "the answered call's record", func() bool {
		_, err := calls.Get(ctx, key)
		return err == nil
	})
	return offer.GetSessionId(), calls
}

func TestEndedCallLeavesNoRecord(t *testing.T) {
	tb := startBus(t)
	startNode(t, tb, "n", 10)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{})
	eventually(t, 5*time.Second, "node in view", func() bool { return p.view.Has("n") })
	offer, err := p.claimer.Offer(context.Background(), offerReq("c"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.claimer.Answer(context.Background(), "n", &callgridv1.AnswerRequest{SessionId: offer.GetSessionId(), Sdp: []byte("v=0")}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.claimer.Delete(context.Background(), "n", &callgridv1.DeleteRequest{SessionId: offer.GetSessionId(), Cause: "bye"}); err != nil {
		t.Fatal(err)
	}
	calls, err := fleet.OpenCallsBucket(context.Background(), p.client, 0)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "the record to go", func() bool {
		_, err := calls.Get(context.Background(), fleet.CallKey("n", offer.GetSessionId()))
		return err != nil
	})
}

// A reaper lock a replica left behind as it died (it never deleted it)
// does not keep the node's calls from being taken: past its age, another
// replica takes the lock over. A fresh one still keeps them to its holder.
func TestStaleReaperLockIsTakenOver(t *testing.T) {
	tb := startBus(t)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{})
	calls, err := fleet.OpenCallsBucket(context.Background(), p.client, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	record := func(session string) {
		t.Helper()
		if _, err := calls.Put(ctx, fleet.CallKey("gone", session), []byte{}); err != nil {
			t.Fatal(err)
		}
	}
	lock := fleet.ReservedNodeID + ".gone"
	record("s1")
	if _, err := calls.Create(ctx, lock, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		t.Fatal(err)
	}
	if recs, err := fleet.ClaimOrphans(ctx, calls, "gone"); err != nil || len(recs) != 0 {
		t.Fatalf("taken under another replica's fresh lock: %v, %v", recs, err)
	}
	if _, err := calls.Put(ctx, lock, []byte(time.Now().Add(-2*time.Minute).UTC().Format(time.RFC3339Nano))); err != nil {
		t.Fatal(err)
	}
	recs, err := fleet.ClaimOrphans(ctx, calls, "gone")
	if err != nil || len(recs) != 1 {
		t.Fatalf("under a stale lock: %d records, %v; want the one", len(recs), err)
	}
}

func TestReservedNodeIDIsRefused(t *testing.T) {
	if err := (Config{ID: fleet.ReservedNodeID, CapacityUnits: 1}).WithDefaults().Validate(); err == nil {
		t.Fatal("a node id that collides with the reaper locks was accepted")
	}
}

// A node that crashed and came back under its id before the proxies saw
// it go hands its previous run's calls to them at start, as media
// timeouts (a proxy then sends BYE to both legs), and their records go.
func TestRestartedNodeHandsOverItsPreviousCalls(t *testing.T) {
	tb := startBus(t)
	first := startNode(t, tb, "n", 10)
	p := startProxy(t, tb, "p", fleet.ClaimConfig{})
	eventually(t, 5*time.Second, "node in view", func() bool { return p.view.Has("n") })
	dialog := &callgridv1.Dialog{CallId: "call-1", CallerTag: "a", CalleeTag: "b", CallerContact: "sip:alice@127.0.0.1:5070"}
	session, calls := answeredCall(t, p, "n", dialog)

	// The first run dies without a word, then the node comes back.
	first.client.Conn().Close()
	first.stop()
	if _, err := calls.Get(context.Background(), fleet.CallKey("n", session)); err != nil {
		t.Fatalf("the crashed run's record is gone already: %v", err)
	}
	startNode(t, tb, "n", 10)

	stream, err := p.client.JetStream().Stream(context.Background(), bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the previous run's call handed over", func() bool {
		msg, err := stream.GetLastMsgForSubject(context.Background(), bus.SubjectMediaTimeout)
		if err != nil {
			return false
		}
		ev := new(callgridv1.MediaTimeout)
		return proto.Unmarshal(msg.Data, ev) == nil && ev.GetSessionId() == session && ev.GetDialog().GetCallerContact() == dialog.GetCallerContact()
	})
	eventually(t, 5*time.Second, "its record removed", func() bool {
		_, err := calls.Get(context.Background(), fleet.CallKey("n", session))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
}

// A node that comes back under its id with a smaller capacity than its
// previous run had (a lower CPU limit shrinks DefaultCapacityUnits, an
// operator narrows the port range) hands over every call of the previous
// run, however many more than its write queue holds: each call's hang-up
// request and end go out before its record goes, none through the queue.
func TestHandoverToASmallerNodeHandsOverEveryCall(t *testing.T) {
	tb := startBus(t)
	c := connect(t, tb, "seed")
	ctx := context.Background()
	calls, err := fleet.OpenCallsBucket(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	const previous = busQueueSize
	seedAnsweredCalls(t, c, calls, previous)

	// The same node id, restarted with a tenth of the capacity.
	n := startNode(t, tb, "n", previous/10)
	// Wait for the handover to be queued (the node serves only after it),
	// then for the queue to empty and the event counts to hold steady.
	eventually(t, 20*time.Second, "the node serving", func() bool { return probeDelete(c, "n") == nil })
	var timeouts, ended uint64
	last, steadySince := uint64(0), time.Now()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		timeouts, ended = eventCount(t, c, bus.SubjectMediaTimeout), eventCount(t, c, bus.SubjectCallEnded)
		if timeouts == previous && ended == previous {
			return
		}
		if sum := timeouts + ended; sum != last || len(n.writer.ch) > 0 {
			last, steadySince = sum, time.Now()
		} else if time.Since(steadySince) > time.Second {
			break
		}
	}
	left := 0
	if lister, err := calls.ListKeysFiltered(ctx, "n.*"); err == nil {
		for range lister.Keys() {
			left++
		}
	}
	t.Fatalf("of %d previous calls, %d hang-up requests and %d end events went out, and %d records are left: the rest are never hung up",
		previous, timeouts, ended, left)
}
