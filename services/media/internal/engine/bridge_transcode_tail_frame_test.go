package engine

import (
	"math"
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

func g722() codec.Info { i, _ := codec.Lookup("G722"); return i }

// sendAt has the reader take a source packet numbered seq at source
// timestamp ts, carrying payload, at now.
func (g *pacedRig) sendAt(seq uint16, ts uint32, payload []byte, now time.Time) {
	g.t.Helper()
	n, err := (&rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: ts, SSRC: 7}).MarshalTo(g.pkt)
	if err != nil {
		g.t.Fatal(err)
	}
	n += copy(g.pkt[n:], payload)
	g.d.handleRTP(g.pkt[:n], g.src, now, 0)
}

// tenMillisecondHalves cuts 20 ms payloads of a sample codec (G.711,
// G.722) into the 10 ms payloads of a source sending a=ptime:10.
func tenMillisecondHalves(frames [][]byte) [][]byte {
	halves := make([][]byte, 0, 2*len(frames))
	for _, f := range frames {
		halves = append(halves, f[:len(f)/2], f[len(f)/2:])
	}
	return halves
}

// rms is the root mean square of pcm.
func rms(pcm []int16) float64 {
	var sum float64
	for _, v := range pcm {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(len(pcm)))
}

// A talkspurt of 10 ms source packets that ends on an odd one leaves half
// a frame of PCM short of the encoder's 20 ms, resampled or not. It is no
// tail: no timer is set for it and nothing goes out. A source that then
// goes on from where its audio ended (it was late, not stopped) completes
// the frame with it, a frame on from the packet before, audio throughout.
func TestTailLeavesWhatIsShortOfAFrame(t *testing.T) {
	tests := []struct {
		name     string
		from, to codec.Info
		// heard is the frame's PCM as the destination decodes it, nil
		// for a codec whose delay smears the audio across frames.
		heard func(t *testing.T, payload []byte) []int16
	}{
		{name: "PCMU to PCMA", from: pcmu(), to: pcma(), heard: decodeWith(codec.PCMA, 8000)},
		{name: "G.722 to PCMU, resampled", from: g722(), to: pcmu(), heard: decodeWith(codec.PCMU, 8000)},
		{name: "PCMU to Opus", from: pcmu(), to: opus()},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := &pacedRig{rig: newRig(t, c.from, c.to), t: t, pkt: make([]byte, maxPacket), buf: make([]byte, maxPacket)}
			tc, step := g.r.tc, c.to.TimestampStep()
			halves := tenMillisecondHalves(encodeTone(t, c.from.Name, c.from.SampleRate, 3))
			now := time.Now()
			at := func(i int) time.Time { return now.Add(time.Duration(i) * 10 * time.Millisecond) }
			for i := range 3 {
				g.sendAt(uint16(100+i), 5000+uint32(i*80), halves[i], at(i))
			}
			got := g.sent()
			if len(got) != 1 {
				t.Fatalf("%d packets for a frame and a half, want one", len(got))
			}
			first := got[0]
			if tc.timerSet || !tc.tailDue.IsZero() || tc.fifoLen == 0 {
				t.Fatalf("timer set %v, tail due at %v, %d samples in the fifo: want the half frame left in the fifo, and no tail",
					tc.timerSet, tc.tailDue, tc.fifoLen)
			}
			late := at(2).Add(tailWait(10*time.Millisecond, defaultTalkspurtGrace) + time.Millisecond)
			g.d.wake(tc, late)
			if got := g.sent(); len(got) != 0 {
				t.Fatalf("%d packets sent for the half frame, want none", len(got))
			}

			g.sendAt(103, 5000+3*80, halves[3], late)
			got = g.sent()
			if len(got) != 1 {
				t.Fatalf("the late source's frame: %d packets, want one", len(got))
			}
			next := got[0]
			if next.Marker || next.SequenceNumber != first.SequenceNumber+1 || next.Timestamp != first.Timestamp+step {
				t.Fatalf("after %+v: %+v, want it a frame on", first.Header, next.Header)
			}
			if c.heard != nil {
				pcm := c.heard(t, next.Payload)
				if len(pcm) != 160 {
					t.Fatalf("frame of %d samples, want 160", len(pcm))
				}
				if held, late := rms(pcm[10:70]), rms(pcm[90:150]); held < 1000 || late < 1000 {
					t.Fatalf("frame: the half held at %.0f rms, the late half at %.0f rms, want the tone throughout", held, late)
				}
			}
		})
	}
}

// A source of 10 ms packets whose talkspurts end on an odd packet, and
// that is late after each by more than the talkspurt grace before going on
// from where its audio ended, keeps the destination on its clock: every
// talkspurt starts where the source's does, within a frame, however many
// came before. Moving each late source's audio past silence sent for the
// half frame, the destination ran 10 ms further ahead at every one.
func TestLateTalkspurtEndsKeepToTheSourceClock(t *testing.T) {
	g := newPacedRig(t, frameDuration)
	tc := g.r.tc
	halves := tenMillisecondHalves(g.tone[:3])
	start := time.Now()
	seq := uint16(100)
	var firstTS uint32
	const talkspurts = 10
	drift := make([]int32, 0, talkspurts)
	for k := range talkspurts {
		base := 5000 + uint32(k)*8000 // a second apart: a second of silence between
		now := start.Add(time.Duration(k) * time.Second)
		at := func(i int) time.Time { return now.Add(time.Duration(i) * 10 * time.Millisecond) }
		for i := range 3 {
			g.sendAt(seq, base+uint32(i*80), halves[i], at(i))
			seq++
		}
		got := g.sent()
		if len(got) != 1 {
			t.Fatalf("talkspurt %d: %d packets for a frame and a half, want one", k, len(got))
		}
		if k == 0 {
			firstTS = got[0].Timestamp
		}
		drift = append(drift, int32(got[0].Timestamp-(firstTS+base-5000)))
		// The source is late by more than a tail waits for.
		late := at(2).Add(tailWait(10*time.Millisecond, defaultTalkspurtGrace) + time.Millisecond)
		g.d.wake(tc, late)
		if got := g.sent(); len(got) != 0 {
			t.Fatalf("talkspurt %d: %d packets for the half frame left, want none", k, len(got))
		}
		// Its audio goes on from where it ended, and the talkspurt ends.
		g.sendAt(seq, base+240, halves[3], late)
		g.sendAt(seq+1, base+320, halves[4], late.Add(10*time.Millisecond))
		seq += 2
		if got := g.sent(); len(got) != 1 {
			t.Fatalf("talkspurt %d: the late audio made %d packets, want one", k, len(got))
		}
	}
	if last := drift[len(drift)-1]; last > int32(tc.frameTicks) || last < -int32(tc.frameTicks) {
		t.Fatalf("talkspurts start %v ticks off the source's clock: after %d late talkspurt ends the destination runs %v ahead, want within a frame",
			drift, talkspurts-1, time.Duration(last)*time.Second/8000)
	}
}

// decodeWith decodes a payload of the codec at rate.
func decodeWith(name codec.Name, rate int) func(t *testing.T, payload []byte) []int16 {
	return func(t *testing.T, payload []byte) []int16 {
		t.Helper()
		pcm := make([]int16, maxDecodedSamples)
		n, err := newTestDecoder(t, name, rate).Decode(payload, pcm)
		if err != nil {
			t.Fatal(err)
		}
		return pcm[:n]
	}
}
