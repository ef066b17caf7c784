package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// RTP that reaches leg B before the callee's answer, from a stranger or
// from the callee itself, is counted in the leg's packets and dropped
// (TestPacketsBeforeTheAnswerAreCountedAsNoDestination), but it is no part
// of the stream the call's quality rates: the leg has no receive
// statistics until the answer gives it a codec, and the answer starts
// them afresh. Here the stranger's sequence numbers and timestamps jump
// wildly; the call's loss, expected packets, duplicates, reordering and
// jitter are those of the callee's stream after the answer alone, the same
// as in a call that had no early packets, whether latching is allowed or
// not: a leg with no SDP yet has no address to latch from.
func TestPacketsBeforeTheAnswerDoNotSkewTheLegsQuality(t *testing.T) {
	for _, latching := range []bool{false, true} {
		t.Run(fmt.Sprintf("latching %v", latching), func(t *testing.T) {
			checkEarlyPacketsLeaveQuality(t, latching)
		})
	}
}

func checkEarlyPacketsLeaveQuality(t *testing.T, latching bool) {
	e, _ := newTestEngine(t, func(c *Config) { c.AllowLatching = latching })
	ctx := context.Background()
	const after = 20
	run := func(id string, early bool) LegQuality {
		t.Helper()
		a, b, stranger := newEndpoint(t), newEndpoint(t), newEndpoint(t)
		offer, err := e.Offer(ctx, OfferParams{SessionID: id, SDP: a.sdp("0")})
		if err != nil {
			t.Fatal(err)
		}
		nodeB := nodeAddr(t, offer)
		s, err := e.lookup(id)
		if err != nil {
			t.Fatal(err)
		}
		if early {
			for i := range 5 {
				stranger.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: uint16(30000 + 997*i), Timestamp: uint32(i) * 80_000_000, SSRC: 66}, pcmuPayload(9))
				b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: uint16(60000 + 2*i), Timestamp: uint32(i) * 16_000, SSRC: 2}, pcmuPayload(2))
			}
			deadline := time.Now().Add(2 * time.Second)
			for s.legs[1].drops[dropNoDestination].Load() < 10 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if _, _, err := e.Answer(ctx, id, b.sdp("0"), false); err != nil {
			t.Fatal(err)
		}
		for i := range after {
			b.send(nodeB, rtp.Header{PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: uint32(i * 160), SSRC: 2}, pcmuPayload(2))
			time.Sleep(20 * time.Millisecond)
		}
		receiveAll(t, a, after)
		q, err := e.Delete(id)
		if err != nil {
			t.Fatal(err)
		}
		return q.Legs[1]
	}
	clean := run("clean", false)
	skewed := run("early", true)
	if skewed.PacketsIn != clean.PacketsIn+10 {
		t.Fatalf("leg B counted %d packets in, want the %d of the clean call and the 10 early ones", skewed.PacketsIn, clean.PacketsIn)
	}
	if skewed.Lost != clean.Lost || skewed.Expected != clean.Expected || skewed.Duplicates != clean.Duplicates || skewed.Reordered != clean.Reordered {
		t.Fatalf("with early packets: lost %d of %d, %d duplicates, %d reordered; without: lost %d of %d, %d duplicates, %d reordered",
			skewed.Lost, skewed.Expected, skewed.Duplicates, skewed.Reordered, clean.Lost, clean.Expected, clean.Duplicates, clean.Reordered)
	}
	// Timestamps 10,000 s apart taken into the jitter would put it in
	// the hundreds of seconds; a paced stream's is a few milliseconds.
	if skewed.JitterMs > 1000 {
		t.Fatalf("jitter %.1f ms with early packets (%.1f ms without): the stranger's timestamps were measured", skewed.JitterMs, clean.JitterMs)
	}
}
