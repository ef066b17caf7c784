package engine

import (
	"errors"
	"testing"
)

// An answer is held to the node's offer it answers (RFC 3264 §6): as many
// m-lines in the same order, audio where the offer had it, and a format
// the offer had. The callee's first answer and an answer to a re-offer
// the node made in-dialog (here A's hold, offered on to B) are checked
// alike: a refused one changes nothing, and a format the offer did not
// have, listed beside one it had, is left out rather than used.
func TestAnswersAreCheckedAgainstTheNodesOffer(t *testing.T) {
	const video = "m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
	tests := []struct {
		name  string
		sdp   func(b *endpoint, notOffered string) []byte
		want  error // nil: taken
		codec string
	}{
		{name: "a codec offered", sdp: func(b *endpoint, _ string) []byte { return b.sdp("0") }, codec: "PCMU"},
		{name: "a codec not offered", sdp: func(b *endpoint, no string) []byte { return b.sdp(no) }, want: ErrUnsupportedCodec},
		{name: "one not offered before one offered", sdp: func(b *endpoint, no string) []byte { return b.sdp(no + " 0") }, codec: "PCMU"},
		{name: "an m-line the offer did not have", sdp: func(b *endpoint, _ string) []byte { return append(b.sdp("0"), video...) }, want: ErrBadSDP},
	}
	for _, tc := range tests {
		t.Run("first answer, "+tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := t.Context()
			if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0")}); err != nil {
				t.Fatal(err)
			}
			// The node offers the callee every codec it has: what it did
			// not offer, it cannot take either.
			_, _, err := e.Answer(ctx, "s1", tc.sdp(b, "18"), false)
			checkAnswerTaken(t, e, err, tc.want, tc.codec)
		})
		t.Run("answer to a re-offer, "+tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := t.Context()
			// The re-offer to B carries its PCMU alone: PCMA, which
			// both legs have and the node transcodes, is not offered.
			bridge(t, e, "s1", a.sdp("0 8"), b.sdp("0 8"))
			if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("0 8", "a=sendonly"), false); err != nil {
				t.Fatal(err)
			}
			_, _, err := e.Update(ctx, "s1", LegB, tc.sdp(b, "8"), true)
			checkAnswerTaken(t, e, err, tc.want, tc.codec)
		})
	}
}

// checkAnswerTaken checks an answer's outcome: refused with want, or, for
// want nil, taken with leg B on codec.
func checkAnswerTaken(t *testing.T, e *Engine, err, want error, codec string) {
	t.Helper()
	if want != nil {
		if !errors.Is(err, want) {
			t.Fatalf("answer: %v, want %v", err, want)
		}
		return
	}
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	s, _ := e.lookup("s1")
	s.mu.Lock()
	defer s.mu.Unlock()
	if got := s.legs[1].codec.Name; got != codec {
		t.Fatalf("leg B on %s, want %s", got, codec)
	}
}
