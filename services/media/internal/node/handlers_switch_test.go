package node

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// switchingMedia is fakeMedia that keeps, as the engine does, whether each
// session transcodes, tells the node of every change in it
// (HandleTranscodingChange) as it makes it, answers a repeat of the last
// answer with the flag as it is now, and can have the callee switch codec
// at the two moments around an answer, an update or a rollback that the
// node cannot tell apart from the outside: just before the engine takes
// the request up, and just after it has worked out its reply.
type switchingMedia struct {
	*fakeMedia
	node *Node

	mu          sync.Mutex
	transcoding map[string]bool
	lastAnswer  map[string][]byte
	// answerTranscodes is what an answer with new SDP, or an update,
	// works out.
	answerTranscodes bool
	// switchBefore and switchAfter, when set, switch once at that moment
	// to the flag they hold.
	switchBefore, switchAfter *bool
}

func newSwitchingMedia() *switchingMedia {
	return &switchingMedia{fakeMedia: newFakeMedia(), transcoding: map[string]bool{}, lastAnswer: map[string][]byte{}}
}

func (m *switchingMedia) Answer(ctx context.Context, id string, sdp []byte, provisional bool) ([]byte, bool, error) {
	if _, _, err := m.fakeMedia.Answer(ctx, id, sdp, provisional); err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.switchNow(id, &m.switchBefore)
	if !bytes.Equal(m.lastAnswer[id], sdp) {
		m.lastAnswer[id] = sdp
		m.set(id, m.answerTranscodes)
	}
	reply := m.transcoding[id]
	m.switchNow(id, &m.switchAfter)
	return []byte("answer"), reply, nil
}

// switchNow makes the switch *at holds, if any, once. The caller holds m.mu.
func (m *switchingMedia) switchNow(id string, at **bool) {
	if *at == nil {
		return
	}
	to := **at
	*at = nil
	m.set(id, to)
}

// set makes the session transcode or not and, as the engine does, tells
// the node when that is a change. The caller holds m.mu.
func (m *switchingMedia) set(id string, to bool) {
	if m.transcoding[id] == to {
		return
	}
	m.transcoding[id] = to
	m.node.HandleTranscodingChange(id, to)
}

// switchTo is the callee switching codec in the middle of a call.
func (m *switchingMedia) switchTo(id string, to bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := &to
	m.switchNow(id, &p)
}

func (m *switchingMedia) Update(_ context.Context, id string, _ callgridv1.Leg, _ []byte, _ bool) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.switchNow(id, &m.switchBefore)
	m.set(id, m.answerTranscodes)
	reply := m.transcoding[id]
	m.switchNow(id, &m.switchAfter)
	return []byte("update"), reply, nil
}

// Rollback puts the session back on one codec, as the test's rejected
// offers found it.
func (m *switchingMedia) Rollback(_ context.Context, id string, _ callgridv1.Leg) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.switchNow(id, &m.switchBefore)
	m.set(id, false)
	reply := m.transcoding[id]
	m.switchNow(id, &m.switchAfter)
	return []byte("answer"), reply, nil
}

func (m *switchingMedia) engineTranscodes(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.transcoding[id]
}

// A codec switch the engine reports while an answer is being applied, or
// during early media, leaves the session charged for what the engine
// really does, whichever came first: the switch after the engine worked out
// its answer (so the answer's flag is stale), or the switch just before an
// answer with new SDP that the engine then re-negotiated.
func TestCodecSwitchAroundAnAnswerIsCharged(t *testing.T) {
	on, off := true, false
	type step struct {
		// answer: the SDP of an answer to send (provisional or final); a
		// step without one is a codec switch to switchTo, or an update.
		answer      string
		provisional bool
		update      bool
		// What an answer with new SDP (or an update) works out, and the
		// switches around the engine's answer.
		transcodes                bool
		switchBefore, switchAfter *bool
		switchTo                  *bool
		// Then: whether the session transcodes.
		want bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "switch just after the engine answered", steps: []step{
			{answer: "b1", switchAfter: &on, want: true},
		}},
		{name: "switch back just after the engine answered a transcoded call", steps: []step{
			{answer: "b1", transcodes: true, switchAfter: &off, want: false},
		}},
		{name: "switch just after a provisional answer", steps: []step{
			{answer: "b1", provisional: true, switchAfter: &on, want: true},
			{answer: "b1", want: true},
		}},
		{name: "switch during early media, then the same final answer", steps: []step{
			{answer: "b1", provisional: true, want: false},
			{switchTo: &on, want: true},
			{answer: "b1", want: true},
		}},
		{name: "switch during early media, then a final answer with new sdp", steps: []step{
			{answer: "b1", provisional: true, want: false},
			{switchTo: &on, want: true},
			{answer: "b2", transcodes: false, want: false},
		}},
		{name: "switch just before an answer with new sdp", steps: []step{
			{answer: "b1", provisional: true, want: false},
			{answer: "b2", transcodes: false, switchBefore: &on, want: false},
		}},
		{name: "update in the early dialog", steps: []step{
			{answer: "b1", provisional: true, want: false},
			{update: true, transcodes: true, want: true},
		}},
	}
	const transcodeCost = 8
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			media := newSwitchingMedia()
			n, err := New(Config{ID: "n", CapacityUnits: 10, PassthroughCost: 1, TranscodeCost: transcodeCost}, zerolog.Nop(), prometheus.NewRegistry(), nil, media)
			if err != nil {
				t.Fatal(err)
			}
			media.node = n
			ctx := context.Background()
			id := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0")}).GetSessionId()
			for i, st := range tc.steps {
				var replied *bool
				switch {
				case st.answer != "":
					media.mu.Lock()
					media.answerTranscodes, media.switchBefore, media.switchAfter = st.transcodes, st.switchBefore, st.switchAfter
					media.mu.Unlock()
					r := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: id, Sdp: []byte(st.answer), Provisional: st.provisional})
					if r.GetStatus() != callgridv1.Status_STATUS_OK {
						t.Fatalf("step %d: answer: %v %s", i, r.GetStatus(), r.GetDetail())
					}
					tr := r.GetTranscoding()
					replied = &tr
				case st.update:
					media.mu.Lock()
					media.answerTranscodes = st.transcodes
					media.mu.Unlock()
					if r := n.handleUpdate(ctx, &callgridv1.UpdateRequest{SessionId: id, Leg: callgridv1.Leg_LEG_B, Sdp: []byte("v=0")}); r.GetStatus() != callgridv1.Status_STATUS_OK {
						t.Fatalf("step %d: update: %v %s", i, r.GetStatus(), r.GetDetail())
					}
				default:
					media.switchTo(id, *st.switchTo)
				}
				if got := media.engineTranscodes(id); got != st.want {
					t.Fatalf("step %d: the fake engine transcodes %v, the case says %v", i, got, st.want)
				}
				wantUsed, wantGauge := 1, 0.0
				if st.want {
					wantUsed, wantGauge = transcodeCost, 1
				}
				s := n.ledger.snapshot()
				gauge := testutil.ToFloat64(n.metrics.transcoded)
				if s.used != wantUsed || s.transcoded != int(wantGauge) || gauge != wantGauge {
					t.Fatalf("step %d: %d units used, %d transcoded, gauge %v; want %d, %v, %v", i, s.used, s.transcoded, gauge, wantUsed, wantGauge, wantGauge)
				}
				if replied != nil && *replied != st.want {
					t.Fatalf("step %d: the answer reply says transcoding %v, want %v", i, *replied, st.want)
				}
			}
			if st := n.handleDelete(ctx, &callgridv1.DeleteRequest{SessionId: id}).GetStatus(); st != callgridv1.Status_STATUS_OK {
				t.Fatalf("delete: %v", st)
			}
			if s := n.ledger.snapshot(); s.used != 0 || s.transcoded != 0 || testutil.ToFloat64(n.metrics.transcoded) != 0 {
				t.Fatalf("after delete: %+v, gauge %v", s, testutil.ToFloat64(n.metrics.transcoded))
			}
		})
	}
}

// A codec switch the engine reports while an update or a rollback is being
// applied leaves the session charged for what the engine really does.
// Unlike an answer, an update cannot be asked again: the node goes by the
// engine reporting every change, the update's own included, in order, so
// that whichever came last is what it records, and a reply overtaken by a
// switch (just after the engine worked it out, before the ledger records
// it) is not taken for the newer.
func TestCodecSwitchAroundAnUpdateIsCharged(t *testing.T) {
	on, off := true, false
	type step struct {
		rollback bool
		// What the update works out, and the switches around it.
		transcodes                bool
		switchBefore, switchAfter *bool
		// Then: whether the session transcodes.
		want bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "switch just after an update that started transcoding", steps: []step{
			{transcodes: true, switchAfter: &off, want: false},
		}},
		{name: "switch just after an update that kept the codecs", steps: []step{
			{transcodes: false, switchAfter: &on, want: true},
		}},
		{name: "switch just before an update that then stops transcoding", steps: []step{
			{transcodes: false, switchBefore: &on, want: false},
		}},
		{name: "switch just before an update that keeps it", steps: []step{
			{transcodes: true, switchBefore: &on, want: true},
		}},
		{name: "switch just after a rollback", steps: []step{
			{transcodes: true, want: true},
			{rollback: true, switchAfter: &on, want: true},
		}},
		{name: "switch just before a rollback that then stops transcoding", steps: []step{
			{transcodes: false, want: false},
			{rollback: true, switchBefore: &on, want: false},
		}},
	}
	const transcodeCost = 8
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			media := newSwitchingMedia()
			n, err := New(Config{ID: "n", CapacityUnits: 10, PassthroughCost: 1, TranscodeCost: transcodeCost}, zerolog.Nop(), prometheus.NewRegistry(), nil, media)
			if err != nil {
				t.Fatal(err)
			}
			media.node = n
			ctx := context.Background()
			id := n.handleOffer(ctx, &callgridv1.OfferRequest{CallId: "c", Sdp: []byte("v=0")}).GetSessionId()
			if r := n.handleAnswer(ctx, &callgridv1.AnswerRequest{SessionId: id, Sdp: []byte("b1")}); r.GetStatus() != callgridv1.Status_STATUS_OK || r.GetTranscoding() {
				t.Fatalf("answer: %v %s, transcoding %v", r.GetStatus(), r.GetDetail(), r.GetTranscoding())
			}
			for i, st := range tc.steps {
				media.mu.Lock()
				media.answerTranscodes, media.switchBefore, media.switchAfter = st.transcodes, st.switchBefore, st.switchAfter
				media.mu.Unlock()
				r := n.handleUpdate(ctx, &callgridv1.UpdateRequest{SessionId: id, Leg: callgridv1.Leg_LEG_B, Sdp: []byte("v=0"), Rollback: st.rollback})
				if r.GetStatus() != callgridv1.Status_STATUS_OK {
					t.Fatalf("step %d: update: %v %s", i, r.GetStatus(), r.GetDetail())
				}
				if got := media.engineTranscodes(id); got != st.want {
					t.Fatalf("step %d: the fake engine transcodes %v, the case says %v", i, got, st.want)
				}
				wantUsed, wantGauge := 1, 0.0
				if st.want {
					wantUsed, wantGauge = transcodeCost, 1
				}
				s := n.ledger.snapshot()
				gauge := testutil.ToFloat64(n.metrics.transcoded)
				if s.used != wantUsed || s.transcoded != int(wantGauge) || gauge != wantGauge {
					t.Fatalf("step %d: %d units used, %d transcoded, gauge %v; want %d, %v, %v", i, s.used, s.transcoded, gauge, wantUsed, wantGauge, wantGauge)
				}
			}
			if st := n.handleDelete(ctx, &callgridv1.DeleteRequest{SessionId: id}).GetStatus(); st != callgridv1.Status_STATUS_OK {
				t.Fatalf("delete: %v", st)
			}
			if s := n.ledger.snapshot(); s.used != 0 || s.transcoded != 0 || testutil.ToFloat64(n.metrics.transcoded) != 0 {
				t.Fatalf("after delete: %+v, gauge %v", s, testutil.ToFloat64(n.metrics.transcoded))
			}
		})
	}
}
