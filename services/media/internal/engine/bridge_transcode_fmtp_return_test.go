package engine

import (
	"context"
	"fmt"
	"testing"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// A re-INVITE that takes the receiver's Opus fmtp back to one it had
// before (A, then B, then A again) has the kept encoder run as A says
// again, not as B left it: the route carries the options, and the reader
// reconfigures the transcoder whenever they differ from what it runs as
// (transcoder.useOpus), whether or not a packet went through under B.
// With cbr=1, 12 kbit/s is 30 bytes every 20 ms and 16 kbit/s 40.
func TestKeptOpusEncoderReturnsToAnEarlierFmtp(t *testing.T) {
	fmtp := func(bps int) string {
		return fmt.Sprintf("a=fmtp:111 maxaveragebitrate=%d;cbr=1;useinbandfec=0", bps)
	}
	const rtpmap = "a=rtpmap:111 opus/48000/2"
	for _, carriedUnderB := range []bool{true, false} {
		t.Run(fmt.Sprintf("audio under B %v", carriedUnderB), func(t *testing.T) {
			e, _ := newTestEngine(t, func(c *Config) { c.Opus = codec.DefaultOpusOptions() })
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := context.Background()
			nodeA, _, transcoding := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", rtpmap, fmtp(12000)))
			if !transcoding {
				t.Fatal("PCMU to Opus not transcoded")
			}
			tone := encodeTone(t, codec.PCMU, 8000, 30)
			seq := 0
			sendAndCheck := func(what string, frames, want int) {
				t.Helper()
				for range frames {
					a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(seq), Timestamp: uint32(seq * 160), SSRC: 7}, tone[seq])
					seq++
				}
				for i, p := range receivePackets(t, b, frames) {
					if p.PayloadType != 111 || len(p.Payload) != want {
						t.Fatalf("%s: Opus packet %d: PT %d, %d bytes; want PT 111 and %d bytes", what, i, p.PayloadType, len(p.Payload), want)
					}
				}
			}
			reinvite := func(bps int) {
				t.Helper()
				if _, _, err := e.Update(ctx, "s1", LegB, b.sdp("111", rtpmap, fmtp(bps)), false); err != nil {
					t.Fatalf("B's offer at %d bps: %v", bps, err)
				}
				if _, _, err := e.Update(ctx, "s1", LegA, a.sdp("0"), true); err != nil {
					t.Fatalf("A's answer: %v", err)
				}
			}
			sendAndCheck("fmtp A", 10, 30)
			reinvite(16000)
			if carriedUnderB {
				sendAndCheck("fmtp B", 10, 40)
			}
			reinvite(12000)
			sendAndCheck("fmtp A again", 10, 30)
		})
	}
}
