package engine

import (
	"context"
	"fmt"
	"testing"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// A session keeps one transcoder per direction and pair of codecs, so that
// an endpoint re-negotiating does not make it allocate without end
// (routeFor). A re-INVITE whose fmtp names another maxaveragebitrate (RFC
// 7587 §6.1 lets it change during a session) changes what the encoder
// runs as, not which transcoder carries the audio: an endpoint sending a
// re-INVITE a minute, or one doing it on purpose, must not grow the
// session by a decoder, an Opus encoder, a resampler and a timer each time.
func TestTranscodersStayBoundedWhenTheReceiversFmtpChanges(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) { c.Opus = codec.DefaultOpusOptions() })
	a, b := newEndpoint(t), newEndpoint(t)
	ctx := context.Background()
	opus := func(rate int) []byte {
		return b.sdp("111", "a=rtpmap:111 opus/48000/2", fmt.Sprintf("a=fmtp:111 maxaveragebitrate=%d", rate))
	}
	if _, _, transcoding := bridge(t, e, "s1", a.sdp("0"), opus(20000)); !transcoding {
		t.Fatal("PCMU to Opus not transcoded")
	}
	const rounds = 20
	for i := range rounds {
		// B's re-INVITE, then A's answer to the node's re-offer.
		if _, _, err := e.Update(ctx, "s1", LegB, opus(8000+1000*i), false); err != nil {
			t.Fatalf("round %d: B's offer: %v", i, err)
		}
		if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("0"), true); err != nil {
			t.Fatalf("round %d: A's answer: %v", i, err)
		}
	}
	s, err := e.lookup("s1")
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	n, closers := len(s.transcoders), len(s.closers)
	s.mu.Unlock()
	// One pair of codecs each way: PCMU to Opus and Opus to PCMU.
	if n > 2 {
		t.Fatalf("session keeps %d transcoders (%d closers) after %d re-INVITEs that changed only B's maxaveragebitrate; want at most 2", n, closers, rounds)
	}
}

// The Opus encoder kept across a re-INVITE that changes the receiver's
// fmtp runs as the new fmtp says from the next packet on: here cbr=1 at
// 12, then 16 kbit/s, so every 20 ms packet is 30 bytes, then 40. It is
// the same encoder, reconfigured: the bridge's transcoder, the tone's
// source, go on.
func TestKeptOpusEncoderFollowsTheReceiversNewFmtp(t *testing.T) {
	fmtp := func(bps int) string {
		return fmt.Sprintf("a=fmtp:111 maxaveragebitrate=%d;cbr=1;useinbandfec=0", bps)
	}
	const rtpmap = "a=rtpmap:111 opus/48000/2"
	t.Run("transcoding bridge", func(t *testing.T) {
		e, _ := newTestEngine(t, func(c *Config) { c.Opus = codec.DefaultOpusOptions() })
		a, b := newEndpoint(t), newEndpoint(t)
		ctx := context.Background()
		nodeA, _, transcoding := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", rtpmap, fmtp(12000)))
		if !transcoding {
			t.Fatal("PCMU to Opus not transcoded")
		}
		s, err := e.lookup("s1")
		if err != nil {
			t.Fatal(err)
		}
		carrying := func() *transcoder {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.dirs[0].route.Load().tc
		}
		tone := encodeTone(t, codec.PCMU, 8000, 20)
		seq := 0
		sendAndCheck := func(frames, want int) {
			t.Helper()
			for range frames {
				a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(seq), Timestamp: uint32(seq * 160), SSRC: 7}, tone[seq])
				seq++
			}
			for i, p := range receivePackets(t, b, frames) {
				if p.PayloadType != 111 || len(p.Payload) != want {
					t.Fatalf("Opus packet %d: PT %d, %d bytes; want PT 111 and %d bytes", i, p.PayloadType, len(p.Payload), want)
				}
			}
		}
		sendAndCheck(10, 30)
		before := carrying()
		if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("111", rtpmap, fmtp(16000)), false); err != nil {
			t.Fatalf("B's offer: %v", err)
		}
		if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("0"), true); err != nil {
			t.Fatalf("A's answer: %v", err)
		}
		sendAndCheck(10, 40)
		if after := carrying(); after != before {
			t.Fatal("the re-INVITE replaced the transcoder; want the one kept, reconfigured")
		}
	})
	t.Run("tone", func(t *testing.T) {
		e, _ := newTestEngine(t, func(c *Config) { c.Opus = codec.DefaultOpusOptions() })
		a := newEndpoint(t)
		ctx := context.Background()
		if _, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("111", rtpmap, fmtp(12000)), Service: ServiceTone}); err != nil {
			t.Fatal(err)
		}
		for i, p := range receivePackets(t, a, 5) {
			if len(p.Payload) != 30 {
				t.Fatalf("tone packet %d: %d bytes, want 30", i, len(p.Payload))
			}
		}
		s, err := e.lookup("s1")
		if err != nil {
			t.Fatal(err)
		}
		before := s.tone.Load()
		if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("111", rtpmap, fmtp(16000)), false); err != nil {
			t.Fatalf("A's re-INVITE: %v", err)
		}
		// Packets sent before the re-INVITE may still be on their way.
		const inFlight = 10
		for i := 0; ; i++ {
			if i == inFlight {
				t.Fatalf("no 40-byte tone packet in %d after the re-INVITE", inFlight)
			}
			if p := receivePackets(t, a, 1)[0]; len(p.Payload) == 40 {
				break
			}
		}
		for i, p := range receivePackets(t, a, 5) {
			if len(p.Payload) != 40 {
				t.Fatalf("tone packet %d after the first at 16 kbit/s: %d bytes, want 40", i, len(p.Payload))
			}
		}
		if s.tone.Load() != before {
			t.Fatal("the re-INVITE replaced the tone; want the one playing, reconfigured")
		}
	})
}
