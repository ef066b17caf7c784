package engine

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/dsp"
	"callgrid.dev/services/media/internal/sdpneg"
)

// minTranscodedSNR is the tone quality a PCMU↔Opus tandem must keep: G.711
// alone gives ~35 dB, Opus at 24 kb/s ~20 dB on a pure tone.
const minTranscodedSNR = 15

var toneCandidates = []float64{300, 500, ToneHz, 1500, 2000, 3000}

// encodeTone returns frames of a 1 kHz tone encoded in name at rate.
func encodeTone(t testing.TB, name codec.Name, rate, frames int) [][]byte {
	t.Helper()
	enc, err := codec.NewEncoder(name, rate, codec.DefaultOpusOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	tone := dsp.NewTone(ToneHz, float64(rate), dsp.AmplitudeFromDBFS(-10))
	pcm := make([]int16, codec.FrameSamplesAt(rate))
	buf := make([]byte, codec.OpusMaxPacketBytes)
	out := make([][]byte, frames)
	for i := range out {
		tone.Fill(pcm)
		n, err := enc.Encode(pcm, buf)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = append([]byte(nil), buf[:n]...)
	}
	return out
}

// receiveTone collects frames packets, checks their numbering and decodes
// them with name at rate.
func receiveTone(t *testing.T, ep *endpoint, name codec.Name, rate int, wantPT uint8, tsStep uint32, frames int) []int16 {
	t.Helper()
	dec, err := codec.NewDecoder(name, rate)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	pcm := make([]int16, 6000)
	var out []int16
	var prev rtp.Packet
	for i := range frames {
		p, ok := ep.recv(2 * time.Second)
		if !ok {
			t.Fatalf("received %d of %d frames", i, frames)
		}
		if p.PayloadType != wantPT {
			t.Fatalf("frame %d: payload type %d, want %d", i, p.PayloadType, wantPT)
		}
		if i == 0 && !p.Marker {
			t.Error("first transcoded frame has no marker")
		}
		if i > 0 {
			if p.SequenceNumber != prev.SequenceNumber+1 || p.Timestamp-prev.Timestamp != tsStep || p.SSRC != prev.SSRC {
				t.Fatalf("frame %d: seq %d→%d ts %d→%d", i, prev.SequenceNumber, p.SequenceNumber, prev.Timestamp, p.Timestamp)
			}
		}
		prev = p
		n, err := dec.Decode(p.Payload, pcm)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pcm[:n]...)
	}
	return out
}

func checkTone(t *testing.T, pcm []int16, rate int) {
	t.Helper()
	pcm = pcm[len(pcm)/5:] // let adaptive coders settle
	freq, _ := dsp.DominantFrequency(pcm, float64(rate), toneCandidates)
	snr := dsp.ToneSNR(pcm, ToneHz, float64(rate))
	t.Logf("dominant %v Hz, SNR %.1f dB", freq, snr)
	if freq != ToneHz || snr < minTranscodedSNR {
		t.Fatalf("dominant %v Hz at %.1f dB, want %d Hz at ≥ %d dB", freq, snr, ToneHz, minTranscodedSNR)
	}
}

func TestTranscodePCMUOpus(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, nodeB, transcoding := bridge(t, e, "s1",
		a.sdp("0 101", "a=rtpmap:101 telephone-event/8000"),
		b.sdp("111 110", "a=rtpmap:111 opus/48000/2", "a=rtpmap:110 telephone-event/48000"))
	if !transcoding {
		t.Fatal("PCMU to Opus not reported as transcoding")
	}
	const frames = 40

	t.Run("PCMU on A arrives as Opus on B", func(t *testing.T) {
		for i, payload := range encodeTone(t, codec.PCMU, 8000, frames) {
			a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: uint32(5000 + i*160), SSRC: 7, Marker: i == 0}, payload)
		}
		checkTone(t, receiveTone(t, b, codec.Opus, 48000, 111, 960, frames), 48000)
	})
	t.Run("DTMF from A arrives rescaled to B's clock", func(t *testing.T) {
		ts := uint32(5000 + frames*160)
		a.send(nodeA, rtp.Header{PayloadType: 101, SequenceNumber: 100 + frames, Timestamp: ts, SSRC: 7, Marker: true}, []byte{7, 0x0a, 0x01, 0x40}) // digit 7, 320 ticks
		a.send(nodeA, rtp.Header{PayloadType: 101, SequenceNumber: 101 + frames, Timestamp: ts, SSRC: 7}, []byte{7, 0x8a, 0x03, 0x20})               // end, 800 ticks
		var got []rtp.Packet
		for range 2 {
			p, ok := b.recv(2 * time.Second)
			if !ok {
				t.Fatal("event not delivered")
			}
			got = append(got, p)
		}
		for i, want := range []uint16{320 * 6, 800 * 6} {
			p := got[i]
			if p.PayloadType != 110 || p.Payload[0] != 7 || binary.BigEndian.Uint16(p.Payload[2:]) != want {
				t.Fatalf("event %d: pt %d payload %x, want pt 110 duration %d", i, p.PayloadType, p.Payload, want)
			}
		}
		if !got[0].Marker || got[0].Timestamp != got[1].Timestamp || got[1].SequenceNumber != got[0].SequenceNumber+1 {
			t.Fatalf("event numbering: %+v / %+v", got[0].Header, got[1].Header)
		}
	})
	t.Run("Opus on B arrives as PCMU on A", func(t *testing.T) {
		for i, payload := range encodeTone(t, codec.Opus, 48000, frames) {
			b.send(nodeB, rtp.Header{PayloadType: 111, SequenceNumber: uint16(9 + i), Timestamp: uint32(i * 960), SSRC: 8, Marker: i == 0}, payload)
		}
		checkTone(t, receiveTone(t, a, codec.PCMU, 8000, 0, 160, frames), 8000)
	})

	q, err := e.Delete("s1")
	if err != nil {
		t.Fatal(err)
	}
	if q.Legs[0].Codec != "PCMU" || q.Legs[1].Codec != "opus" || q.Legs[1].PacketsOut != frames+2 {
		t.Fatalf("quality = %+v", q)
	}
}

func TestTranscodeConcealsLoss(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", "a=rtpmap:111 opus/48000/2"))
	const frames = 30
	for i, payload := range encodeTone(t, codec.PCMU, 8000, frames) {
		if i == 15 {
			continue // lost in the network
		}
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 7}, payload)
	}
	// The gap is filled: B gets every frame with continuous numbering.
	checkTone(t, receiveTone(t, b, codec.Opus, 48000, 111, 960, frames), 48000)
	q, _ := e.Delete("s1")
	if q.Legs[0].Lost != 1 {
		t.Fatalf("leg A lost %d, want 1", q.Legs[0].Lost)
	}
}

// A source that starts its sequence numbers over on the same SSRC, back
// or far ahead, goes on being transcoded once the packet after the jump
// confirms it: only that first packet is taken for a stray.
func TestTranscodeFollowsASequenceRestart(t *testing.T) {
	for _, tc := range []struct {
		name          string
		first, second uint16
	}{
		{name: "back", first: 1000, second: 500},
		{name: "far ahead", first: 100, second: 40000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", "a=rtpmap:111 opus/48000/2"))
			const frames = 20
			for i, payload := range encodeTone(t, codec.PCMU, 8000, frames) {
				seq := tc.first + uint16(i)
				if i >= frames/2 {
					seq = tc.second + uint16(i)
				}
				a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(i * 160), SSRC: 7}, payload)
			}
			got := 0
			for {
				if _, ok := b.recv(300 * time.Millisecond); !ok {
					break
				}
				got++
			}
			if got != frames-1 {
				t.Fatalf("B got %d frames of %d, want all but the one after the jump", got, frames)
			}
		})
	}
}

func TestOfferToCalleeAddsTranscodableCodecs(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	offer, err := e.Offer(t.Context(), OfferParams{SessionID: "s1", SDP: a.sdp("8 101", "a=rtpmap:101 telephone-event/8000")})
	if err != nil {
		t.Fatal(err)
	}
	d, err := sdpneg.Parse(offer)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range d.Audio().Codecs {
		names = append(names, fmt.Sprintf("%s/%d:%d", c.Name, c.ClockRate, c.PT))
	}
	// A's codec first with A's numbering, then what the node transcodes to.
	if got := strings.Join(names, " "); got != "PCMA/8000:8 opus/48000:96 G722/8000:9 PCMU/8000:0" {
		t.Fatalf("offer to B: %s", got)
	}
	if te, ok := d.Audio().TelephoneEvent(8000); !ok || te.PT != 101 {
		t.Fatalf("telephone-event/8000 = %+v", te)
	}
	if _, ok := d.Audio().TelephoneEvent(48000); !ok {
		t.Fatal("no telephone-event/48000 for the added Opus")
	}
	// B takes PCMA, which A offered: no transcoding.
	if _, transcoding, err := e.Answer(t.Context(), "s1", b.sdp("8"), false); err != nil || transcoding {
		t.Fatalf("answer: transcoding %v, %v", transcoding, err)
	}
}

// receivePackets reads count RTP packets.
func receivePackets(t *testing.T, ep *endpoint, count int) []rtp.Packet {
	t.Helper()
	pkts := make([]rtp.Packet, count)
	for i := range pkts {
		p, ok := ep.recv(2 * time.Second)
		if !ok {
			t.Fatalf("received %d of %d packets", i, count)
		}
		pkts[i] = p
	}
	return pkts
}

// newTestDecoder is a decoder closed when the test ends.
func newTestDecoder(t *testing.T, name codec.Name, rate int) codec.Decoder {
	t.Helper()
	dec, err := codec.NewDecoder(name, rate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dec.Close)
	return dec
}

// decodePackets checks that pkts are of payload type pt, each holding ms
// of audio as dec decodes it, numbered one after another and timestamped
// ms apart on the codec's clock, the first one starting a talkspurt
// (marker) if starts and no other, and returns their PCM.
func decodePackets(t *testing.T, dec codec.Decoder, pkts []rtp.Packet, pt uint8, ms int, starts bool) []int16 {
	t.Helper()
	info, _ := codec.Lookup(string(dec.Name()))
	rate := dec.SampleRate()
	step := uint32(info.ClockRate * ms / 1000)
	pcm := make([]int16, 6000)
	var out []int16
	for i, p := range pkts {
		if p.PayloadType != pt || p.Marker != (starts && i == 0) {
			t.Fatalf("packet %d: payload type %d, marker %v", i, p.PayloadType, p.Marker)
		}
		if prev := pkts[max(i-1, 0)]; i > 0 && (p.SequenceNumber != prev.SequenceNumber+1 || p.Timestamp-prev.Timestamp != step || p.SSRC != prev.SSRC) {
			t.Fatalf("packet %d: seq %d→%d ts %d→%d; want timestamps %d apart", i, prev.SequenceNumber, p.SequenceNumber, prev.Timestamp, p.Timestamp, step)
		}
		n, err := dec.Decode(p.Payload, pcm)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if want := rate * ms / 1000; n != want {
			t.Fatalf("packet %d holds %d samples at %d Hz, want %d ms", i, n, rate, ms)
		}
		out = append(out, pcm[:n]...)
	}
	return out
}

// A transcoding bridge sends each endpoint packets of the packet time it
// asked for (a=ptime) when its codec allows it and its a=maxptime does
// (G.711 and G.722 in whole 10 ms, Opus in 20, 40 or 60 ms), else 20 ms,
// whatever the other endpoint sends; numbering, timestamps and the
// talkspurt's marker follow, and a packet lost on the way in (concealed,
// or with Opus rebuilt from the next one's FEC) leaves no hole.
func TestTranscodeSendsThePacketTimeAskedFor(t *testing.T) {
	const opus48 = "a=rtpmap:111 opus/48000/2"
	type stream struct {
		codec codec.Name
		rate  int // encoded or decoded at
		pt    uint8
	}
	var (
		pcmuIn = stream{codec.PCMU, 8000, 0}
		opusIn = stream{codec.Opus, 48000, 111}
	)
	tests := []struct {
		name       string
		aSDP, bSDP []string // A's offer, B's answer
		fromB      bool     // B sends, A receives; else the other way
		in, out    stream
		ms         int // the packet time expected
		lost       int // a frame not sent, 0 for none
	}{
		{name: "PCMU to Opus in 40 ms", aSDP: []string{"0"}, bSDP: []string{"111", opus48, "a=ptime:40"},
			in: pcmuIn, out: stream{codec.Opus, 48000, 111}, ms: 40},
		{name: "PCMU to Opus in 60 ms", aSDP: []string{"0"}, bSDP: []string{"111", opus48, "a=ptime:60"},
			in: pcmuIn, out: stream{codec.Opus, 48000, 111}, ms: 60},
		{name: "PCMU to Opus asked in 30 ms: 20", aSDP: []string{"0"}, bSDP: []string{"111", opus48, "a=ptime:30"},
			in: pcmuIn, out: stream{codec.Opus, 48000, 111}, ms: 20},
		{name: "PCMU to PCMA in 40 ms, a packet lost", aSDP: []string{"0"}, bSDP: []string{"8", "a=ptime:40"},
			in: pcmuIn, out: stream{codec.PCMA, 8000, 8}, ms: 40, lost: 9},
		{name: "Opus to PCMU in 10 ms", aSDP: []string{"0", "a=ptime:10"}, bSDP: []string{"111", opus48}, fromB: true,
			in: opusIn, out: stream{codec.PCMU, 8000, 0}, ms: 10},
		{name: "Opus to G.722 in 30 ms", aSDP: []string{"9", "a=ptime:30"}, bSDP: []string{"111", opus48}, fromB: true,
			in: opusIn, out: stream{codec.G722, 16000, 9}, ms: 30},
		{name: "Opus to PCMU in 30 ms, a packet lost and rebuilt", aSDP: []string{"0", "a=ptime:30"}, bSDP: []string{"111", opus48}, fromB: true,
			in: opusIn, out: stream{codec.PCMU, 8000, 0}, ms: 30, lost: 9},
		{name: "Opus to PCMA within a 10 ms maxptime", aSDP: []string{"8", "a=maxptime:10"}, bSDP: []string{"111", opus48}, fromB: true,
			in: opusIn, out: stream{codec.PCMA, 8000, 8}, ms: 10},
		{name: "Opus to PCMA asked past its maxptime: 20", aSDP: []string{"8", "a=ptime:60", "a=maxptime:40"}, bSDP: []string{"111", opus48}, fromB: true,
			in: opusIn, out: stream{codec.PCMA, 8000, 8}, ms: 20},
	}
	const frames = 24 // 480 ms, a whole number of packets of each time
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			a, b := newEndpoint(t), newEndpoint(t)
			nodeA, nodeB, transcoding := bridge(t, e, "s1", a.sdp(tc.aSDP[0], tc.aSDP[1:]...), b.sdp(tc.bSDP[0], tc.bSDP[1:]...))
			if !transcoding {
				t.Fatal("not transcoding")
			}
			from, to, node := a, b, nodeA
			if tc.fromB {
				from, to, node = b, a, nodeB
			}
			in, _ := codec.Lookup(string(tc.in.codec))
			for i, payload := range encodeTone(t, tc.in.codec, tc.in.rate, frames) {
				if tc.lost > 0 && i == tc.lost {
					continue
				}
				from.send(node, rtp.Header{PayloadType: tc.in.pt, SequenceNumber: uint16(100 + i), Timestamp: 5000 + uint32(i)*in.TimestampStep(), SSRC: 7, Marker: i == 0}, payload)
			}
			pkts := receivePackets(t, to, frames*20/tc.ms)
			checkTone(t, decodePackets(t, newTestDecoder(t, tc.out.codec, tc.out.rate), pkts, tc.out.pt, tc.ms, true), tc.out.rate)
			to.expectNothing(100 * time.Millisecond)
		})
	}
}

// A re-INVITE that asks for another packet time is followed from the next
// packet on, the stream going on as it was: no marker, no gap in numbering
// or timestamps.
func TestTranscodeFollowsAReInvitesPacketTime(t *testing.T) {
	const opus48 = "a=rtpmap:111 opus/48000/2"
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", opus48))
	tone := encodeTone(t, codec.PCMU, 8000, 24)
	send := func(from, to int) {
		for i := from; i < to; i++ {
			a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 7}, tone[i])
		}
	}
	send(0, 6)
	dec := newTestDecoder(t, codec.Opus, 48000)
	before := receivePackets(t, b, 6)
	pcm := decodePackets(t, dec, before, 111, 20, true)
	if _, _, err := e.Update(context.Background(), "s1", LegB, b.sdp("111", opus48, "a=ptime:60"), false); err != nil {
		t.Fatal(err)
	}
	send(6, 24)
	after := receivePackets(t, b, 6)
	pcm = append(pcm, decodePackets(t, dec, after, 111, 60, false)...)
	if last, next := before[len(before)-1], after[0]; next.SequenceNumber != last.SequenceNumber+1 || next.Timestamp-last.Timestamp != 960 {
		t.Fatalf("across the re-INVITE: seq %d→%d ts %d→%d, want the next packet 960 ticks on", last.SequenceNumber, next.SequenceNumber, last.Timestamp, next.Timestamp)
	}
	checkTone(t, pcm, 48000)
}

// A stream that resumes (a new source) right after a long packet starts
// after that packet's end, not inside it: a 60 ms packet ends 60 ms on,
// and audio timestamped within it would overlap what was just played.
func TestTranscodedStreamResumesAfterItsLastPacket(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("111", "a=rtpmap:111 opus/48000/2", "a=ptime:60"))
	tone := encodeTone(t, codec.PCMU, 8000, 6)
	for i := range 3 {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 7}, tone[i])
	}
	first := receivePackets(t, b, 1)[0]
	for i := range 3 {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(5000 + i), Timestamp: uint32(90000 + i*160), SSRC: 8}, tone[3+i])
	}
	next := receivePackets(t, b, 1)[0]
	if after := int32(next.Timestamp - first.Timestamp); after < 2880 || !next.Marker {
		t.Fatalf("the new source starts %d ticks after a 60 ms packet (marker %v), want at least 2880 and a marker", after, next.Marker)
	}
}

// benchmarkTranscodeInto is BenchmarkTranscodeFrame into packets of every.
func benchmarkTranscodeInto(b *testing.B, from, to codec.Info, every time.Duration) {
	g := newRig(b, from, to)
	g.r.packetTime = every
	frames := encodeTone(b, from.Name, from.SampleRate, 50)
	pkt := make([]byte, maxPacket)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		raw, _ := (&rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i) * from.TimestampStep(), SSRC: 9}).MarshalTo(pkt)
		n := copy(pkt[raw:], frames[i%len(frames)])
		g.d.handleRTP(pkt[:raw+n], g.src, time.Now(), 0)
		i++
	}
}

// BenchmarkTranscodeInto60msOpus packs three 20 ms Opus frames a packet.
func BenchmarkTranscodeInto60msOpus(b *testing.B) {
	benchmarkTranscodeInto(b, pcmu(), opus(), 60*time.Millisecond)
}

// BenchmarkTranscodeInto10msPCMU cuts each 20 ms of G.711 in two packets.
func BenchmarkTranscodeInto10msPCMU(b *testing.B) {
	benchmarkTranscodeInto(b, opus(), pcmu(), 10*time.Millisecond)
}
