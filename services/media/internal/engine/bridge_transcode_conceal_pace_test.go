package engine

import (
	"testing"
	"time"
)

// Frames concealed for packets lost on the way in stand for audio whose
// time has already come: the packet after the loss arrives when they were
// due, a packet time apart, before it. They go out at once, ahead of its
// own, numbered and timestamped on from the packet before the loss, and
// nothing is left paced: holding them back a packet time each would only
// make the audio after them late by as much. Pacing is for the packets a
// source packet's audio makes beyond the first (bridge_transcode_pace.go),
// which a receiver would otherwise get ahead of their time.
func TestConcealedFramesGoOutWithThePacketAfterTheLoss(t *testing.T) {
	g := newPacedRig(t, 20*time.Millisecond)
	tc, now := g.r.tc, time.Now()
	g.source(0, 7, 1, now)
	first := g.expectRun("the packet before the loss", 1, 160, nil)
	g.source(3, 7, 1, now.Add(60*time.Millisecond)) // 1 and 2 lost
	g.expectRun("two concealed frames and the packet after them", 3, 160, first)
	if tc.pacing() || tc.packets.pending() {
		t.Fatalf("paced %v, pending %v: want the concealed frames sent, none held back", tc.pacing(), tc.packets.pending())
	}
}
