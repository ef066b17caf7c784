package engine

import (
	"testing"
	"time"
)

// A digit pressed while the fifo holds PCM short of a frame (a source of
// 10 ms packets that stopped on an odd one) has that PCM sent before it,
// padded with silence to a frame as a talkspurt's tail is, numbered and
// timestamped on from the audio before. The digit, which starts where the
// audio ended, starts after the padding instead, rather than inside the
// packet just sent, and the audio after it keeps to that timeline, as
// audio after a talkspurt's tail does. A digit after a pause drops what
// the fifo holds, as the audio path would, and moves nothing.
func TestDigitFlushesWhatIsLeftOfAFrameBeforeIt(t *testing.T) {
	tests := []struct {
		name    string
		eventTS uint32 // source timestamp of the digit; the audio ends at 5240
		flushed bool   // the half frame goes before the digit
		moved   uint32 // the digit and what follows it, in ticks
	}{
		{name: "digit where the audio ends", eventTS: 5240, flushed: true, moved: 80},
		{name: "digit after a pause", eventTS: 5240 + 800},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := newPacedRig(t, frameDuration)
			var halves [][]byte // 10 ms PCMU payloads
			for _, f := range g.tone[:3] {
				halves = append(halves, f[:80], f[80:])
			}
			now := time.Now()
			at := func(i int) time.Time { return now.Add(time.Duration(i) * 10 * time.Millisecond) }
			for i := range 3 {
				g.sendAt(uint16(100+i), 5000+uint32(i*80), halves[i], at(i))
			}
			first := g.expectRun("a frame and a half", 1, 160, nil)
			g.event(3, c.eventTS, at(3))
			got := g.sent()
			if want := map[bool]int{true: 2, false: 1}[c.flushed]; len(got) != want {
				t.Fatalf("%d packets for the digit, want %d", len(got), want)
			}
			ev := got[len(got)-1]
			if want := first.Timestamp + c.eventTS - 5000 + c.moved; ev.PayloadType != g.r.eventPT || ev.Timestamp != want {
				t.Fatalf("event %+v, want payload type %d at ts %d", ev.Header, g.r.eventPT, want)
			}
			last := first
			if c.flushed {
				half := got[0]
				if half.PayloadType != first.PayloadType || half.Marker || half.SequenceNumber != first.SequenceNumber+1 || half.Timestamp != first.Timestamp+160 {
					t.Fatalf("the half frame %+v after %+v, want it a frame on", half.Header, first.Header)
				}
				pcm := decodeWith("PCMA", 8000)(t, half.Payload)
				if len(pcm) != 160 {
					t.Fatalf("the half frame: %d samples, want a frame", len(pcm))
				}
				if audio, pad := rms(pcm[:70]), rms(pcm[90:]); audio < 1000 || pad > 100 {
					t.Fatalf("the half frame: audio at %.0f rms, padding at %.0f rms, want the tone then silence", audio, pad)
				}
				last = &half
			}
			if ev.SequenceNumber != last.SequenceNumber+1 {
				t.Fatalf("event seq %d after %d", ev.SequenceNumber, last.SequenceNumber)
			}
			// The digit's next packet goes where its first went.
			g.event(4, c.eventTS, at(4))
			got = g.sent()
			if len(got) != 1 || got[0].SequenceNumber != ev.SequenceNumber+1 || got[0].Timestamp != ev.Timestamp {
				t.Fatalf("the digit's next packet: %d sent, want one at ts %d", len(got), ev.Timestamp)
			}
			ev = got[0]

			// The audio after the digit's 20 ms.
			after := c.eventTS + 160
			g.sendAt(105, after, halves[3], at(6))
			g.sendAt(106, after+80, halves[4], at(7))
			got = g.sent()
			if len(got) != 1 {
				t.Fatalf("the audio after the digit: %d packets, want one", len(got))
			}
			next := got[0]
			if want := first.Timestamp + after - 5000 + c.moved; next.SequenceNumber != ev.SequenceNumber+1 || next.Timestamp != want {
				t.Fatalf("the audio after the digit %+v, want seq %d ts %d", next.Header, ev.SequenceNumber+1, want)
			}
			if tc := g.r.tc; tc.fifoLen != 0 {
				t.Fatalf("%d samples left in the fifo", tc.fifoLen)
			}
		})
	}
}
