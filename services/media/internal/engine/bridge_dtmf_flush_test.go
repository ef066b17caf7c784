package engine

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/pion/rtp"
)

// digitAt has the reader take a telephone-event packet of digit 5,
// numbered seq, at source timestamp ts, lasting dur so far, with the end
// bit when end says, at now.
func (g *pacedRig) digitAt(seq uint16, ts uint32, marker, end bool, dur uint16, now time.Time) {
	g.t.Helper()
	payload := []byte{5, 0x0a, 0, 0}
	if end {
		payload[1] |= eventEndBit
	}
	binary.BigEndian.PutUint16(payload[2:], dur)
	raw, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 101, SequenceNumber: seq, Timestamp: ts, SSRC: 7, Marker: marker},
		Payload: payload}).Marshal()
	if err != nil {
		g.t.Fatal(err)
	}
	g.d.handleRTP(raw, g.src, now, 0)
}

// A digit pressed while the fifo holds PCM short of a frame (a source of
// 10 ms packets that stopped on an odd one) goes out at once, where the
// source put it on its clock, numbered on from the audio before; the PCM
// stays in the fifo, and the audio after the digit, which does not follow
// on from it, drops it and goes out where the source put it too. Nothing
// is padded with silence, and nothing moves off the source's clock.
func TestDigitLeavesWhatIsShortOfAFrameBeforeIt(t *testing.T) {
	tests := []struct {
		name    string
		eventTS uint32 // source timestamp of the digit; the audio ends at 5240
	}{
		{name: "digit where the audio ends", eventTS: 5240},
		{name: "digit after a pause", eventTS: 5240 + 800},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := newPacedRig(t, frameDuration)
			halves := tenMillisecondHalves(g.tone[:3])
			now := time.Now()
			at := func(i int) time.Time { return now.Add(time.Duration(i) * 10 * time.Millisecond) }
			for i := range 3 {
				g.sendAt(uint16(100+i), 5000+uint32(i*80), halves[i], at(i))
			}
			first := g.expectRun("a frame and a half", 1, 160, nil)
			g.event(3, c.eventTS, at(3))
			got := g.sent()
			if len(got) != 1 {
				t.Fatalf("%d packets for the digit, want 1", len(got))
			}
			ev := got[0]
			if want := first.Timestamp + c.eventTS - 5000; ev.PayloadType != g.r.eventPT || ev.Timestamp != want || ev.SequenceNumber != first.SequenceNumber+1 {
				t.Fatalf("event %+v after %+v, want payload type %d at ts %d", ev.Header, first.Header, g.r.eventPT, want)
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
			if want := first.Timestamp + after - 5000; next.SequenceNumber != ev.SequenceNumber+1 || next.Timestamp != want {
				t.Fatalf("the audio after the digit %+v, want seq %d ts %d", next.Header, ev.SequenceNumber+1, want)
			}
			pcm := decodeWith("PCMA", 8000)(t, next.Payload)
			if len(pcm) != 160 || rms(pcm[:70]) < 1000 || rms(pcm[90:]) < 1000 {
				t.Fatalf("the audio after the digit: %d samples, want a frame of the tone throughout", len(pcm))
			}
			if tc := g.r.tc; tc.fifoLen != 0 {
				t.Fatalf("%d samples left in the fifo", tc.fifoLen)
			}
		})
	}
}

// A digit's end packet is sent three times (RFC 4733 §2.5.1.4), and a
// source's audio resumes once the digit is over, between those
// retransmissions. Every packet of the one event must carry the one
// timestamp, or the receiver takes the later ones for another key press;
// and the audio after the digit, which follows on from itself, must go out
// as the frames it makes, not padded with silence at every retransmission.
// Here the source sends 10 ms packets, so the audio that resumes leaves
// half a frame in the fifo when the next end packet comes.
func TestDigitEndRetransmittedAfterAudioResumes(t *testing.T) {
	g := newPacedRig(t, frameDuration)
	halves := tenMillisecondHalves(g.tone[:4])
	now := time.Now()
	at := func(ms int) time.Time { return now.Add(time.Duration(ms) * time.Millisecond) }
	for i := range 3 {
		g.sendAt(uint16(100+i), 5000+uint32(i*80), halves[i], at(10*i))
	}
	g.expectRun("a frame and a half", 1, 160, nil)
	// A 100 ms digit where the audio ends, and its end.
	g.digitAt(103, 5240, true, false, 160, at(30))
	g.digitAt(104, 5240, false, false, 480, at(70))
	g.digitAt(105, 5240, false, true, 800, at(130))
	var pkts []rtp.Packet
	pkts = append(pkts, g.sent()...)
	// The audio resumes after the digit, its end retransmitted between.
	const resume = 5240 + 800
	g.sendAt(106, resume, halves[3], at(140))
	g.digitAt(107, 5240, false, true, 800, at(145))
	g.sendAt(108, resume+80, halves[4], at(150))
	g.digitAt(109, 5240, false, true, 800, at(155))
	g.sendAt(110, resume+160, halves[5], at(160))
	g.sendAt(111, resume+240, halves[6], at(170))
	after := g.sent()
	pkts = append(pkts, after...)

	var eventTS []uint32
	for _, p := range pkts {
		if p.PayloadType == g.r.eventPT {
			eventTS = append(eventTS, p.Timestamp)
		}
	}
	for i, ts := range eventTS {
		if ts != eventTS[0] {
			t.Errorf("event packet %d of the one digit at ts %d, the first at %d: the receiver hears another key press (all: %v)", i, ts, eventTS[0], eventTS)
			break
		}
	}
	var audio []rtp.Packet
	for _, p := range after {
		if p.PayloadType == g.r.audioPT {
			audio = append(audio, p)
		}
	}
	// 40 ms of audio after the digit: two frames, 160 ticks apart.
	if len(audio) != 2 || audio[1].Timestamp != audio[0].Timestamp+160 {
		var got []uint32
		for _, p := range audio {
			got = append(got, p.Timestamp)
		}
		t.Errorf("40 ms of audio after the digit went out as %d packets at ts %v, want two frames 160 apart: each end packet padded it with silence", len(audio), got)
	}
}

// Digits pressed where the audio of a 10 ms source ends on an odd packet,
// a second apart, keep the destination on the source's clock: every
// talkspurt starts where the source's does, within a frame, however many
// digits came before. With the half frame sent before each digit padded
// with silence, and the digit and all after it moved past the padding,
// the destination ran 10 ms further ahead at every digit.
func TestDigitsKeepToTheSourceClock(t *testing.T) {
	g := newPacedRig(t, frameDuration)
	tc := g.r.tc
	halves := tenMillisecondHalves(g.tone[:3])
	start := time.Now()
	seq := uint16(100)
	var firstTS uint32
	const digits = 10
	drift := make([]int32, 0, digits)
	for k := range digits {
		base := 5000 + uint32(k)*8000
		now := start.Add(time.Duration(k) * time.Second)
		at := func(ms int) time.Time { return now.Add(time.Duration(ms) * time.Millisecond) }
		for i := range 3 {
			g.sendAt(seq, base+uint32(i*80), halves[i], at(10*i))
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
		// A 100 ms digit where the audio ends, then 20 ms of audio.
		g.digitAt(seq, base+240, true, false, 160, at(30))
		g.digitAt(seq+1, base+240, false, true, 800, at(130))
		g.sendAt(seq+2, base+1040, halves[3], at(140))
		g.sendAt(seq+3, base+1120, halves[4], at(150))
		seq += 4
		if got := g.sent(); len(got) != 3 {
			t.Fatalf("digit %d: %d packets, want two event packets and a frame", k, len(got))
		}
	}
	if last := drift[len(drift)-1]; last > int32(tc.frameTicks) || last < -int32(tc.frameTicks) {
		t.Fatalf("talkspurts start %v ticks off the source's clock: after %d digits the destination runs %v ahead, want within a frame",
			drift, digits-1, time.Duration(last)*time.Second/8000)
	}
}

// Into 40 ms packets, the first frame of the audio that resumes after a
// digit waits for the second. An end packet retransmitted between them
// (RFC 4733 §2.5.1.4) belongs to the digit before that audio: it must not
// send the waiting frame early as a short packet, which would break the
// 40 ms packets the destination asked for.
func TestDigitEndRetransmittedKeepsTheNextPacketWhole(t *testing.T) {
	g := newPacedRig(t, 40*time.Millisecond)
	now := time.Now()
	at := func(ms int) time.Time { return now.Add(time.Duration(ms) * time.Millisecond) }
	g.sendAt(100, 5000, g.tone[0], at(0))
	g.sendAt(101, 5160, g.tone[1], at(20))
	g.digitAt(102, 5320, true, false, 160, at(40))
	g.digitAt(103, 5320, false, true, 480, at(80))
	const resume = 5320 + 480
	g.sendAt(104, resume, g.tone[2], at(100))
	g.digitAt(105, 5320, false, true, 480, at(105))
	g.sendAt(106, resume+160, g.tone[3], at(120))
	var audio []rtp.Packet
	for _, p := range g.sent() {
		if p.PayloadType == g.r.audioPT {
			audio = append(audio, p)
		}
	}
	if len(audio) != 2 {
		t.Fatalf("%d audio packets, want the 40 ms before the digit and the 40 ms after it", len(audio))
	}
	if got := len(audio[1].Payload); got != 320 {
		t.Fatalf("the audio after the digit went out with %d octets, want one 40 ms packet of 320", got)
	}
}
