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

// rms is the root mean square of pcm.
func rms(pcm []int16) float64 {
	var sum float64
	for _, v := range pcm {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(len(pcm)))
}

// A talkspurt of 10 ms source packets that ends on an odd one leaves half
// a frame of PCM short of the encoder's 20 ms, resampled or not. It goes
// out with the tail, padded with silence to a frame, numbered and
// timestamped on from the packets before; a source that then goes on from
// where its audio ended (it was late, not stopped) has its audio follow
// the padded frame, not overlap it.
func TestTailFlushesWhatIsLeftOfAFrame(t *testing.T) {
	tests := []struct {
		name     string
		from, to codec.Info
		// heard is the tail's PCM as the destination decodes it, nil
		// for a codec whose delay smears the audio into the padding.
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
			var halves [][]byte // 10 ms source payloads
			for _, f := range encodeTone(t, c.from.Name, c.from.SampleRate, 3) {
				halves = append(halves, f[:len(f)/2], f[len(f)/2:])
			}
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
			due := at(2).Add(tailWait(10*time.Millisecond, defaultTalkspurtGrace))
			if !tc.timerSet || !tc.tailDue.Equal(due) {
				t.Fatalf("tail due at %v (timer set %v), want at %v: the half frame left has no tail", tc.tailDue, tc.timerSet, due)
			}
			g.d.wake(tc, due)
			got = g.sent()
			if len(got) != 1 {
				t.Fatalf("the tail: %d packets, want one", len(got))
			}
			tail := got[0]
			if tail.Marker || tail.SequenceNumber != first.SequenceNumber+1 || tail.Timestamp != first.Timestamp+step {
				t.Fatalf("tail %+v after %+v, want it a frame on", tail.Header, first.Header)
			}
			if c.heard != nil {
				pcm := c.heard(t, tail.Payload)
				if len(pcm) != 160 {
					t.Fatalf("tail of %d samples, want a frame", len(pcm))
				}
				if audio, pad := rms(pcm[:70]), rms(pcm[90:]); audio < 1000 || pad > 100 {
					t.Fatalf("tail: audio at %.0f rms, padding at %.0f rms, want the half frame's tone then silence", audio, pad)
				}
			}
			if tc.timerSet || tc.packets.pending() || tc.fifoLen != 0 {
				t.Fatalf("after the tail: timer set %v, pending %v, %d samples in the fifo", tc.timerSet, tc.packets.pending(), tc.fifoLen)
			}

			late := due.Add(time.Millisecond)
			g.sendAt(103, 5000+3*80, halves[3], late)
			g.sendAt(104, 5000+4*80, halves[4], late.Add(10*time.Millisecond))
			got = g.sent()
			if len(got) != 1 {
				t.Fatalf("the late source's frame: %d packets, want one", len(got))
			}
			if next := got[0]; next.SequenceNumber != tail.SequenceNumber+1 || next.Timestamp != tail.Timestamp+step {
				t.Fatalf("after the tail %+v: %+v, want it a frame on", tail.Header, next.Header)
			}
		})
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
