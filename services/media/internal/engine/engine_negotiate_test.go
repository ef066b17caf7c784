package engine

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/sdpneg"
)

// The answer to the caller promises telephone-event only when the callee
// took it too: a caller told it may send RFC 4733 digits that the callee
// cannot receive would have every digit dropped.
func TestAnswerPromisesEventsOnlyWhenBothLegsHaveThem(t *testing.T) {
	tests := []struct {
		name       string
		answer     []string
		wantEvents bool
	}{
		{name: "callee took telephone-event", answer: []string{"0 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"}, wantEvents: true},
		{name: "callee did not", answer: []string{"0"}, wantEvents: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := t.Context()
			if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16")}); err != nil {
				t.Fatal(err)
			}
			raw, _, err := e.Answer(ctx, "s1", b.sdp(tc.answer[0], tc.answer[1:]...), false)
			if err != nil {
				t.Fatal(err)
			}
			d, err := sdpneg.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(d.Audio().TelephoneEvents) > 0; got != tc.wantEvents {
				t.Fatalf("answer to the caller offers telephone-event = %v, want %v:\n%s", got, tc.wantEvents, raw)
			}
		})
	}
}

// The answer to the caller keeps to RFC 3264 §6.1 against the caller's
// offer even when the callee's answer did not.
func TestAnswerDirectionKeepsToTheOffer(t *testing.T) {
	tests := []struct {
		offer, answer, want string
	}{
		{offer: "a=sendonly", answer: "a=sendrecv", want: "a=recvonly"},
		{offer: "a=recvonly", answer: "a=sendrecv", want: "a=sendonly"},
		{offer: "a=inactive", answer: "a=sendrecv", want: "a=inactive"},
		{offer: "a=sendonly", answer: "a=recvonly", want: "a=recvonly"},
		{offer: "a=sendrecv", answer: "a=sendonly", want: "a=sendonly"},
		{offer: "a=sendrecv", answer: "a=sendrecv", want: "a=sendrecv"},
	}
	for _, tc := range tests {
		t.Run(tc.offer+" answered "+tc.answer, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := t.Context()
			if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0", tc.offer)}); err != nil {
				t.Fatal(err)
			}
			raw, _, err := e.Answer(ctx, "s1", b.sdp("0", tc.answer), false)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(raw, []byte(tc.want+"\r\n")) {
				t.Fatalf("answer to the caller, want %s:\n%s", tc.want, raw)
			}
		})
	}
}

// An endpoint at an address the node's sockets cannot send to gets
// "unsupported" (a 488 at the proxy), not a call with no audio one way.
func TestUnreachableAddressFamilyIsRefused(t *testing.T) {
	e, _ := newTestEngine(t, nil) // bound to 127.0.0.1
	_, b := refusesIPv6Peers(t, e)
	// A hold address passes whatever its family: nothing is sent to it.
	hold := bytes.ReplaceAll(b.sdp("0"), []byte("c=IN IP4 127.0.0.1"), []byte("c=IN IP6 ::"))
	if _, _, err := e.Answer(t.Context(), "s1", hold, false); err != nil {
		t.Fatalf("answer on hold: %v", err)
	}
}

// A dual-stack node (bound to ::) reaches peers of both families but
// advertises one address: a peer of the other family could not send to
// it, so it is refused as on a single-family node, not answered with an
// address it cannot use (audio one way only).
func TestDualStackNodeRefusesAPeerItsAdvertisedAddressCannotServe(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) { c.BindIP, c.AdvertiseIP = "::", "127.0.0.1" })
	_, b := refusesIPv6Peers(t, e)
	if _, _, err := e.Answer(t.Context(), "s1", b.sdp("0"), false); err != nil {
		t.Fatalf("IPv4 answer on a node advertising IPv4: %v", err)
	}
}

// refusesIPv6Peers checks that e, serving IPv4 peers, refuses an IPv6
// offer with nothing left behind, takes an IPv4 one as session s1, and
// refuses an IPv6 answer to it; it returns the two endpoints.
func refusesIPv6Peers(t *testing.T, e *Engine) (a, b *endpoint) {
	t.Helper()
	a, b = newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	v6 := func(raw []byte) []byte {
		return bytes.ReplaceAll(raw, []byte("c=IN IP4 127.0.0.1"), []byte("c=IN IP6 ::1"))
	}
	if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: v6(a.sdp("0"))}); !errors.Is(err, ErrUnsupportedCodec) {
		t.Fatalf("IPv6 offer: %v, want ErrUnsupportedCodec", err)
	}
	if e.Active() != 0 || e.pool.InUse() != 0 {
		t.Fatalf("refused offer left %d sessions, %d port pairs", e.Active(), e.pool.InUse())
	}
	if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0")}); err != nil {
		t.Fatalf("IPv4 offer: %v", err)
	}
	if _, _, err := e.Answer(ctx, "s1", v6(b.sdp("0")), false); !errors.Is(err, ErrUnsupportedCodec) {
		t.Fatalf("IPv6 answer: %v, want ErrUnsupportedCodec", err)
	}
	return a, b
}

// A caller's Opus written without its channel count is offered on as
// opus/48000/2, and the callee's compliant answer is taken.
func TestOpusOfferWithoutChannelsIsAnswered(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	offer, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("111 0", "a=rtpmap:111 opus/48000")})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(offer, []byte("opus/48000/2")) {
		t.Fatalf("offer to the callee:\n%s", offer)
	}
	if _, _, err := e.Answer(ctx, "s1", b.sdp("111", "a=rtpmap:111 opus/48000/2"), false); err != nil {
		t.Fatalf("answer opus/48000/2: %v", err)
	}
}

// A re-offer may add back a format an earlier round left out (RFC 3264
// §8.3.2). A re-INVITEs once without telephone-event (a hold, or a device
// that lists only the codec in use), so B is re-offered none and answers
// without one; when A next re-offers it, B is offered it again, and the
// answer back to A promises it, so digits are carried again both ways.
func TestReOfferBringsTelephoneEventBack(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	te := []string{"a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"}
	bridge(t, e, "s1", a.sdp("0 101", te...), b.sdp("0 101", te...))
	events := func(what string, raw []byte, want bool) {
		t.Helper()
		d, err := sdpneg.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Audio().TelephoneEvent(8000); ok != want {
			t.Fatalf("%s has telephone-event/8000 %v, want %v:\n%s", what, ok, want, raw)
		}
	}

	toB, _, err := e.Update(ctx, "s1", LegA, a.sdp("0"), false)
	if err != nil {
		t.Fatal(err)
	}
	events("re-offer to B without A's telephone-event", toB, false)
	if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("0"), true); err != nil {
		t.Fatal(err)
	}

	toB, _, err = e.Update(ctx, "s1", LegA, a.sdp("0 101", te...), false)
	if err != nil {
		t.Fatal(err)
	}
	events("re-offer to B once A offers telephone-event again", toB, true)
	toA, _, err := e.Update(ctx, "s1", LegB, b.sdp("0 101", te...), true)
	if err != nil {
		t.Fatal(err)
	}
	events("answer to A once B took telephone-event again", toA, true)
}

// Opus format parameters are declarative, one direction each (RFC 7587
// §7.1): maxplaybackrate, stereo, useinbandfec, usedtx and cbr say what the
// SDP's writer wants to receive, sprop-* what it will send. A relayed
// stream is decoded by the far end, so the SDP to each leg carries the
// other leg's parameters, and the other leg's DTMF events list, since
// events are passed on one for one. A transcoded stream is decoded by the
// node, so the SDP carries the node's own parameters.
func TestSDPToALegCarriesTheParametersOfWhoDecodesItsStream(t *testing.T) {
	opusA := []string{"a=rtpmap:111 opus/48000/2", "a=fmtp:111 stereo=1;sprop-stereo=1", "a=rtpmap:101 telephone-event/48000", "a=fmtp:101 0-16"}
	opusB := []string{"a=rtpmap:111 opus/48000/2", "a=fmtp:111 maxplaybackrate=16000;sprop-maxcapturerate=16000", "a=rtpmap:101 telephone-event/48000", "a=fmtp:101 0-15"}
	audio := func(t *testing.T, raw []byte) *sdpneg.Media {
		t.Helper()
		d, err := sdpneg.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return d.Audio()
	}
	check := func(t *testing.T, what string, raw []byte, wantFmtp, wantEvents string) {
		t.Helper()
		m := audio(t, raw)
		if m.Codecs[0].Fmtp != wantFmtp {
			t.Errorf("%s has %s fmtp %q, want %q:\n%s", what, m.Codecs[0].Name, m.Codecs[0].Fmtp, wantFmtp, raw)
		}
		if te, ok := m.TelephoneEvent(48000); wantEvents != "" && (!ok || te.Fmtp != wantEvents) {
			t.Errorf("%s has telephone-event %+v (%v), want events %q:\n%s", what, te, ok, wantEvents, raw)
		}
	}

	t.Run("relayed", func(t *testing.T) {
		e, _ := newTestEngine(t, nil)
		a, b := newEndpoint(t), newEndpoint(t)
		ctx := t.Context()
		if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("111 101", opusA...)}); err != nil {
			t.Fatal(err)
		}
		toA, transcoding, err := e.Answer(ctx, "s1", b.sdp("111 101", opusB...), false)
		if err != nil || transcoding {
			t.Fatalf("opus to opus: transcoding %v, %v", transcoding, err)
		}
		check(t, "answer to A", toA, "maxplaybackrate=16000;sprop-maxcapturerate=16000", "0-15")

		toA, _, err = e.Update(ctx, "s1", LegB, b.sdp("111 101", opusB...), false)
		if err != nil {
			t.Fatal(err)
		}
		check(t, "B's re-offer to A", toA, "maxplaybackrate=16000;sprop-maxcapturerate=16000", "0-15")
		toB, _, err := e.Update(ctx, "s1", LegA, a.sdp("111 101", opusA...), true)
		if err != nil {
			t.Fatal(err)
		}
		check(t, "answer to B's re-offer", toB, "stereo=1;sprop-stereo=1", "0-16")
	})

	t.Run("transcoded", func(t *testing.T) {
		e, _ := newTestEngine(t, nil)
		a, b := newEndpoint(t), newEndpoint(t)
		ctx := t.Context()
		if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("111", opusA[:2]...)}); err != nil {
			t.Fatal(err)
		}
		toA, transcoding, err := e.Answer(ctx, "s1", b.sdp("0"), false)
		if err != nil || !transcoding {
			t.Fatalf("opus to pcmu: transcoding %v, %v", transcoding, err)
		}
		check(t, "answer to A", toA, defaultFmtp(opus(), e.cfg.Opus), "")
	})
}

// An in-dialog answer is kept to its offer's direction (RFC 3264 §6.1),
// as the first answer is: a hold answered sendrecv reaches the holder as
// recvonly.
func TestUpdateAnswerKeepsToTheReOffer(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("0", "a=sendonly"), false); err != nil {
		t.Fatal(err)
	}
	out, _, err := e.Update(ctx, "s1", LegB, b.sdp("0", "a=sendrecv"), true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("a=recvonly\r\n")) {
		t.Fatalf("answer to A's hold:\n%s", out)
	}
	// An offer from B is not an answer: it goes to A as B wrote it.
	out, _, err = e.Update(ctx, "s1", LegB, b.sdp("0", "a=sendrecv"), false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("a=sendrecv\r\n")) {
		t.Fatalf("B's re-offer to A:\n%s", out)
	}
}

// A re-offer the far end rejects (a 488 or 491 to the re-INVITE) leaves the
// session as it was before it (RFC 3264 §8): here A's hold is undone, so
// B's audio reaches A again, and the legs are back on one codec.
func TestRejectedReOfferIsRolledBack(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0 8"), b.sdp("0"))
	if _, transcoding, err := e.Update(ctx, "s1", LegA, a.sdp("8", "a=sendonly"), false); err != nil || !transcoding {
		t.Fatalf("hold on another codec: transcoding %v, %v", transcoding, err)
	}
	b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: 1, SSRC: 2}, pcmuPayload(2))
	a.expectNothing(150 * time.Millisecond)
	_, transcoding, err := e.Rollback(ctx, "s1", LegA)
	if err != nil || transcoding {
		t.Fatalf("rollback: transcoding %v, %v", transcoding, err)
	}
	relays(t, "B to A after the rollback", b, nodeB, 2, a)
	relays(t, "A to B after the rollback", a, nodeA, 3, b)
	// Nothing is pending any more: a second rollback changes nothing.
	if _, _, err := e.Rollback(ctx, "s1", LegA); err != nil {
		t.Fatal(err)
	}
	relays(t, "B to A after a second rollback", b, nodeB, 4, a)
}

// answered offers session s1 with aSDP and answers it with bSDP, and
// returns the answer the node sent A.
func answered(t *testing.T, e *Engine, aSDP, bSDP []byte) []byte {
	t.Helper()
	if _, err := e.Offer(t.Context(), OfferParams{SessionID: "s1", CallID: "call-s1", SDP: aSDP}); err != nil {
		t.Fatal(err)
	}
	answer, _, err := e.Answer(t.Context(), "s1", bSDP, false)
	if err != nil {
		t.Fatal(err)
	}
	return answer
}

// A re-offer whose answer the node refuses (the callee answered with a
// codec nobody offered) is rolled back, and the rollback hands back the SDP
// the offerer last got, byte for byte: its re-INVITE is still owed an
// answer, and only that one, same version and all, keeps its session as
// it was.
func TestRollbackReturnsTheOfferersLastAnswer(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	answerToA := answered(t, e, a.sdp("0 8"), b.sdp("0"))
	nodeA := nodeAddr(t, answerToA)
	if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("8 0"), false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("99"), true); err == nil {
		t.Fatal("an answer in a codec nobody offered was taken")
	}
	last, _, err := e.Rollback(ctx, "s1", LegA)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(last, answerToA) {
		t.Fatalf("rollback returned\n%s\nwant A's last answer\n%s", last, answerToA)
	}
	relays(t, "A to B after the rollback", a, nodeA, 1, b)
}

// A re-offer answered early (a 183 to the re-INVITE, which the node takes
// and answers the offerer from) and then in its 2xx with an answer the
// node refuses is rolled back, the early answer with it, and the node
// answers the offerer's re-INVITE on its own: B's media stays as it was.
// That answer must answer A's sendonly offer (RFC 3264 §6.1: recvonly
// or inactive), so it is not the sendrecv answer from before the offer;
// it says what the early answer said, so it is that SDP, same version.
func TestRollbackAfterEarlyAnswerAnswersTheReOffer(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	answerToA := answered(t, e, a.sdp("0"), b.sdp("0"))
	nodeA := nodeAddr(t, answerToA)
	// A puts B on hold; B's 183 answers it, and the node answers A so.
	if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("0", "a=sendonly"), false); err != nil {
		t.Fatal(err)
	}
	early, _, err := e.Update(ctx, "s1", LegB, b.sdp("0", "a=recvonly"), true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(early, []byte("a=recvonly\r\n")) {
		t.Fatalf("early answer to A:\n%s", early)
	}
	// B's 2xx answers in a codec nobody offered: refused, rolled back.
	if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("99"), true); err == nil {
		t.Fatal("an answer in a codec nobody offered was taken")
	}
	last, _, err := e.Rollback(ctx, "s1", LegA)
	if err != nil {
		t.Fatal(err)
	}
	// A's music on hold reaches B, whose media is as it was.
	relays(t, "A to B after the rollback", a, nodeA, 1, b)
	if !bytes.Equal(last, early) {
		t.Fatalf("rollback answered A's sendonly re-offer with\n%s\nwant the same answer as the early one, version and all\n%s", last, early)
	}
}

// When the node refuses the far end's answer to a re-offer, the offerer's
// re-INVITE is answered with the SDP Rollback returns (the proxy's 2xx
// carries it), so it must be an answer to that re-offer (RFC 3264 §6):
// its m-lines in order, the ones not taken rejected with port 0, and a
// codec from it. B keeps its media: a codec B is on, when offered, is
// relayed; otherwise the node transcodes A's new codec to B's.
func TestNodesAnswerToARefusedReOfferAnswersThatOffer(t *testing.T) {
	video := "m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
	tests := []struct {
		name            string
		reOffer         func(a *endpoint) []byte
		wantCodec       string
		wantTranscoding bool
	}{
		{name: "video added", reOffer: func(a *endpoint) []byte { return append(a.sdp("0"), video...) }, wantCodec: "PCMU"},
		{name: "codec changed", reOffer: func(a *endpoint) []byte { return a.sdp("8") }, wantCodec: "PCMA", wantTranscoding: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := t.Context()
			nodeA := nodeAddr(t, answered(t, e, a.sdp("0 8"), b.sdp("0")))
			offer := tc.reOffer(a)
			toB, _, err := e.Update(ctx, "s1", LegA, offer, false)
			if err != nil {
				t.Fatal(err)
			}
			nodeB := nodeAddr(t, toB)
			if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("99"), true); err == nil {
				t.Fatal("an answer in a codec nobody offered was taken")
			}
			answer, transcoding, err := e.Rollback(ctx, "s1", LegA)
			if err != nil {
				t.Fatal(err)
			}
			if transcoding != tc.wantTranscoding {
				t.Fatalf("transcoding %v after the node's answer, want %v", transcoding, tc.wantTranscoding)
			}
			got, err := sdpneg.Parse(answer)
			if err != nil {
				t.Fatalf("rollback sdp: %v\n%s", err, answer)
			}
			want, _ := sdpneg.Parse(offer)
			if len(got.Media) != len(want.Media) {
				t.Fatalf("answer has %d m-lines for a %d-line offer:\n%s", len(got.Media), len(want.Media), answer)
			}
			for i, m := range got.Media {
				if m.Kind != want.Media[i].Kind || (i != got.AudioIndex) != (m.Port == 0) {
					t.Fatalf("answer's m-line %d is %s port %d for the offer's %s:\n%s", i, m.Kind, m.Port, want.Media[i].Kind, answer)
				}
			}
			if c := got.Audio().Codecs; len(c) != 1 || c[0].Name != tc.wantCodec || got.Audio().Direction != sdpneg.SendRecv {
				t.Fatalf("answer's audio %+v %v, want %s sendrecv:\n%s", c, got.Audio().Direction, tc.wantCodec, answer)
			}
			pt := uint8(0)
			if tc.wantCodec == "PCMA" {
				pt = 8
			}
			a.send(nodeA, rtp.Header{PayloadType: pt, SequenceNumber: 1, SSRC: 1}, pcmuPayload(1))
			if p, ok := b.recv(time.Second); !ok || p.PayloadType != 0 {
				t.Fatalf("A to B after the node's answer: got %v PT %d, want PCMU", ok, p.PayloadType)
			}
			b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: 1, SSRC: 2}, pcmuPayload(2))
			if p, ok := a.recv(time.Second); !ok || p.PayloadType != pt {
				t.Fatalf("B to A after the node's answer: got %v PT %d, want %d", ok, p.PayloadType, pt)
			}
		})
	}
}

// The rollback of A's re-offer, whose answer the node refused, hands back
// the SDP in force for A, not the last one built for it. Here that last
// one is an offer A rejected (B held the call, A answered 488, B's offer
// was rolled back): answering A's own re-INVITE with it would send A a
// higher version than its session, saying recvonly though the node has
// put the session back to sendrecv. A's session in force is the answer
// it last got.
func TestRollbackAnswersWithTheSDPInForce(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	answerToA := answered(t, e, a.sdp("0 8"), b.sdp("0"))
	// B puts A on hold; A refuses the re-INVITE (488) and B's offer is
	// rolled back: A's session is still answerToA.
	holdToA, _, err := e.Update(ctx, "s1", LegB, b.sdp("0", "a=sendonly"), false)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(holdToA, answerToA) {
		t.Fatalf("B's hold reached A unchanged:\n%s", holdToA)
	}
	if _, _, err := e.Rollback(ctx, "s1", LegB); err != nil {
		t.Fatal(err)
	}
	// A re-offers; B's answer is refused; A's offer is rolled back and its
	// re-INVITE answered with what the rollback returns.
	if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("8 0"), false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("99"), true); err == nil {
		t.Fatal("an answer in a codec nobody offered was taken")
	}
	last, _, err := e.Rollback(ctx, "s1", LegA)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(last, answerToA) {
		t.Fatalf("rollback answers A's re-INVITE with\n%s\nwant the answer A's session is on\n%s", last, answerToA)
	}
}

// Offers that cross (glare) and are both rejected (491 each way) leave
// the session as it was before either, in whichever order the rejections
// come.
func TestCrossedOffersBothRolledBack(t *testing.T) {
	for _, order := range [][2]Leg{{LegA, LegB}, {LegB, LegA}} {
		t.Run(order[0].String()+" first", func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := t.Context()
			nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
			if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("0", "a=sendonly"), false); err != nil {
				t.Fatal(err)
			}
			if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("0", "a=inactive"), false); err != nil {
				t.Fatal(err)
			}
			for _, leg := range order {
				if _, _, err := e.Rollback(ctx, "s1", leg); err != nil {
					t.Fatal(err)
				}
			}
			relays(t, "A to B", a, nodeA, 1, b)
			relays(t, "B to A", b, nodeB, 2, a)
		})
	}
}

// An offer whose answer came in a provisional response (a 183 to the
// re-INVITE) and which is then rejected is undone on both legs: the
// callee's early answer goes too.
func TestRejectedReOfferUndoesItsEarlyAnswer(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b, bEarly := newEndpoint(t), newEndpoint(t), newEndpoint(t)
	ctx := t.Context()
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("0"), false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Update(ctx, "s1", LegB, bEarly.sdp("0"), true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Rollback(ctx, "s1", LegA); err != nil {
		t.Fatal(err)
	}
	relays(t, "A to B's first address after the rollback", a, nodeA, 1, b)
	bEarly.expectNothing(100 * time.Millisecond)
}

// The node passes each endpoint's a=ptime and a=maxptime on to the other,
// as rtpengine does, and adds none of its own: in its offer to the callee,
// its answer to the caller and its SDP after a re-INVITE.
func TestPacketTimesArePassedOn(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := context.Background()
	check := func(what string, raw []byte, ptime, maxptime int) {
		t.Helper()
		d, err := sdpneg.Parse(raw)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := d.Audio(); got.Ptime != ptime || got.MaxPtime != maxptime {
			t.Fatalf("%s: ptime %d maxptime %d, want %d and %d\n%s", what, got.Ptime, got.MaxPtime, ptime, maxptime, raw)
		}
	}
	offer, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0", "a=ptime:30", "a=maxptime:60")})
	if err != nil {
		t.Fatal(err)
	}
	check("offer to the callee", offer, 30, 60)
	answer, _, err := e.Answer(ctx, "s1", b.sdp("0", "a=ptime:20", "a=maxptime:40"), false)
	if err != nil {
		t.Fatal(err)
	}
	check("answer to the caller", answer, 20, 40)
	reoffer, _, err := e.Update(ctx, "s1", LegB, b.sdp("0", "a=ptime:40"), false)
	if err != nil {
		t.Fatal(err)
	}
	check("the callee's re-offer to the caller", reoffer, 40, 0)
	reanswer, _, err := e.Update(ctx, "s1", LegA, a.sdp("0"), true)
	if err != nil {
		t.Fatal(err)
	}
	check("the caller's answer to it", reanswer, 0, 0)
}
