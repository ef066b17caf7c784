package node

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// A session that never gets its final answer (its proxy died between the
// offer and the answer, or the release was lost) is ended after the setup
// timeout and its units come back; an answered one, and one still within
// the timeout, stay.
func TestUnansweredSessionIsReaped(t *testing.T) {
	media := newFakeMedia()
	n, err := New(Config{ID: "n", CapacityUnits: 10, SetupTimeout: 300 * time.Millisecond}, zerolog.Nop(), prometheus.NewRegistry(), nil, media)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.reapUnanswered(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	offer := func(callID string) string { return offerOK(t, n, callID) }
	answered := offer("answered")
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: answered, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("answer: %v", st)
	}
	ringing := offer("ringing")
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: ringing, Sdp: []byte("v=0"), Provisional: true}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("183: %v", st)
	}
	abandoned := offer("abandoned")
	time.Sleep(150 * time.Millisecond)
	if s := n.ledger.snapshot(); s.sessions != 3 {
		t.Fatalf("within the setup timeout: %d sessions, want 3", s.sessions)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.ledger.snapshot().sessions != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("unanswered sessions not reaped: %+v", n.ledger.snapshot())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, id := range []string{ringing, abandoned} {
		if _, ok := n.ledger.lookup(id); ok {
			t.Errorf("unanswered session %s still held", id)
		}
	}
	if _, ok := n.ledger.lookup(answered); !ok {
		t.Error("the answered session was reaped")
	}
	if s := n.ledger.snapshot(); s.used != 1 {
		t.Errorf("%d units used, want the answered call's 1", s.used)
	}
}

// slowCloseMedia is fakeMedia whose first Close reports the session it
// closes and waits for the gate (an engine tearing down a session's
// sockets takes a moment).
type slowCloseMedia struct {
	*fakeMedia
	once    sync.Once
	closing chan string
	gate    chan struct{}
}

func (m *slowCloseMedia) Close(id string) (*callgridv1.MediaQuality, error) {
	m.once.Do(func() {
		m.closing <- id
		<-m.gate
	})
	return m.fakeMedia.Close(id)
}

// The setup-timeout reaper lists the unanswered sessions, then ends them
// one by one. A session whose final answer lands in between (while the
// reaper closes the one before it) is a call now, and is left alone: the
// proxy has forwarded the 200 OK, and the reaper, which asks no proxy to
// hang up, would leave both phones in a dialog with no media.
func TestSetupTimeoutSparesASessionAnsweredMeanwhile(t *testing.T) {
	media := &slowCloseMedia{fakeMedia: newFakeMedia(), closing: make(chan string, 1), gate: make(chan struct{})}
	const setup = 50 * time.Millisecond
	n, err := New(Config{ID: "n", CapacityUnits: 10, SetupTimeout: setup}, zerolog.Nop(), prometheus.NewRegistry(), nil, media)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ids := map[string]bool{}
	for _, callID := range []string{"one", "two"} {
		r := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: callID, Sdp: []byte("v=0")})
		if r.GetStatus() != callgridv1.Status_STATUS_OK {
			t.Fatalf("offer %s: %v", callID, r.GetStatus())
		}
		ids[r.GetSessionId()] = true
	}
	// Both are past the setup timeout before the reaper first looks.
	eventually(t, 5*time.Second, "both sessions past the setup timeout", func() bool {
		return len(n.ledger.unansweredSince(time.Now().Add(-setup))) == 2
	})
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); n.reapUnanswered(rctx) }()
	var gateOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(media.gate) }) }
	t.Cleanup(func() { openGate(); stop(); <-done })

	var reaped string
	select {
	case reaped = <-media.closing:
	case <-time.After(5 * time.Second):
		t.Fatal("the reaper never ended a session")
	}
	delete(ids, reaped)
	var other string
	for id := range ids {
		other = id
	}
	// The callee answers the other call while the reaper is busy.
	if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: other, Sdp: []byte("v=0")}).GetStatus(); st != callgridv1.Status_STATUS_OK {
		t.Fatalf("answer: %v", st)
	}
	queuedWrites(n) // its call record
	openGate()
	// The reaper finishes the pass it is in (it looks at its context only
	// between passes) before it returns.
	stop()
	<-done
	if _, held := n.ledger.lookup(other); !held {
		hungUp := false
		for _, op := range queuedWrites(n) {
			if _, ok := op.msg.(*callgridv1.MediaTimeout); ok {
				hungUp = true
			}
		}
		t.Fatalf("the setup timeout ended call %s after its final answer (hang-up requested: %v)", other, hungUp)
	}
}

// A session no answer ever reached may be one whose offer reply its
// claimer never had: the claim went on to another node under the same
// session id, and the offer_timeout release sent here was lost. Reaped at
// the setup timeout it publishes no call_ended, which consumers, keeping
// the first end per session id, would take for the live call's. A session
// that had a provisional answer was the call's (its claimer had the reply
// and sent the answer here), and its end goes out.
func TestSetupTimeoutOfASessionNoAnswerReachedPublishesNoEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const setup = time.Minute
		n, err := New(Config{ID: "n", CapacityUnits: 10, SetupTimeout: setup}, zerolog.Nop(), prometheus.NewRegistry(), nil, newFakeMedia())
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		releaseLost := offerOK(t, n, "release-lost")
		ringing := offerOK(t, n, "ringing")
		if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: ringing, Sdp: []byte("v=0"), Provisional: true}).GetStatus(); st != callgridv1.Status_STATUS_OK {
			t.Fatalf("183: %v", st)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); n.reapUnanswered(rctx) }()
		time.Sleep(2 * setup)
		stop()
		<-done
		if s := n.ledger.snapshot(); s.sessions != 0 || s.used != 0 {
			t.Fatalf("after the setup timeout: %+v, want nothing held", s)
		}

		ends := map[string]*callgridv1.CallEnded{}
		for _, op := range queuedWrites(n) {
			if ev, ok := op.msg.(*callgridv1.CallEnded); ok {
				ends[ev.GetSessionId()] = ev
			}
		}
		if ev, ok := ends[releaseLost]; ok {
			t.Errorf("the session no answer reached published %v: it shadows the end of the live call with its id", ev)
		}
		if ev := ends[ringing]; ev.GetCause() != "setup_timeout" {
			t.Errorf("the ringing session's end: %v, want one with cause setup_timeout", ev)
		}
	})
}

// failingAnswerMedia is fakeMedia whose Answer fails (the callee's SDP
// has no codec the engine takes, say).
type failingAnswerMedia struct{ *fakeMedia }

func (failingAnswerMedia) Answer(context.Context, string, []byte, bool) ([]byte, bool, error) {
	return nil, false, errors.New("no common codec")
}

// A provisional answer the engine refused still reached the node: its
// claimer had the offer's reply and sent the answer here, and the proxy
// goes on with the call on this node ("early media not anchored"). The
// setup timeout's end of such a session is the call's, as for a ringing
// one, and is published, although the refused answer never sized it.
func TestSetupTimeoutAfterARefusedProvisionalAnswerPublishesTheEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const setup = time.Minute
		n, err := New(Config{ID: "n", CapacityUnits: 10, SetupTimeout: setup}, zerolog.Nop(), prometheus.NewRegistry(), nil,
			failingAnswerMedia{newFakeMedia()})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		ringing := offerOK(t, n, "ringing")
		if st := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: ringing, Sdp: []byte("v=0"), Provisional: true}).GetStatus(); st == callgridv1.Status_STATUS_OK {
			t.Fatalf("183 answered OK by an engine that fails answers")
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); n.reapUnanswered(rctx) }()
		time.Sleep(2 * setup)
		stop()
		<-done
		if s := n.ledger.snapshot(); s.sessions != 0 {
			t.Fatalf("after the setup timeout: %+v, want nothing held", s)
		}
		var end *callgridv1.CallEnded
		for _, op := range queuedWrites(n) {
			if ev, ok := op.msg.(*callgridv1.CallEnded); ok && ev.GetSessionId() == ringing {
				end = ev
			}
		}
		if end.GetCause() != causeSetupTimeout {
			t.Errorf("the end of the session an answer reached: %v, want one with cause setup_timeout", end)
		}
	})
}
