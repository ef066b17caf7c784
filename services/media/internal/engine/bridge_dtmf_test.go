package engine

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// receivedEvent is an RFC 4733 event as a receiver puts it together from
// its packets (§2.5.2).
type receivedEvent struct {
	code     uint8
	start    uint32 // timestamp of its first segment
	length   uint32 // ticks from start to its end as last told
	segments int
	ends     int // packets with the end bit: the final one and its repeats
}

// eventReceiver plays the receiver of an RFC 4733 stream and fails the
// test at the first packet a valid stream could not hold.
type eventReceiver struct {
	t      *testing.T
	events []receivedEvent
	segTS  uint32 // timestamp of the current segment
	last   uint16 // the duration its newest packet gave
	ended  bool
}

func (rc *eventReceiver) take(i int, p rtp.Packet) {
	t := rc.t
	t.Helper()
	if len(p.Payload) != eventBlockLen {
		t.Fatalf("event packet %d: %d bytes of payload", i, len(p.Payload))
	}
	code, end, duration := p.Payload[0], p.Payload[1]&eventEndBit != 0, binary.BigEndian.Uint16(p.Payload[2:])
	var cur *receivedEvent
	if n := len(rc.events); n > 0 {
		cur = &rc.events[n-1]
	}
	switch {
	case cur == nil || (p.Timestamp != rc.segTS && p.Timestamp != rc.segTS+maxEventDuration) || code != cur.code:
		if cur != nil && !rc.ended {
			t.Fatalf("event packet %d (ts %d) starts a new event while the one at %d has not ended: two key presses", i, p.Timestamp, rc.segTS)
		}
		if !p.Marker {
			t.Fatalf("event packet %d starts an event (ts %d) without the marker bit", i, p.Timestamp)
		}
		rc.events = append(rc.events, receivedEvent{code: code, start: p.Timestamp, segments: 1})
		cur = &rc.events[len(rc.events)-1]
		rc.segTS, rc.ended = p.Timestamp, false
	case p.Timestamp != rc.segTS:
		// RFC 4733 §2.5.1.3: the segment before ends at the maximum,
		// without the end bit, and the next starts 0xFFFF ticks later.
		if rc.ended {
			t.Fatalf("event packet %d starts a segment after the event's end", i)
		}
		if rc.last != maxEventDuration {
			t.Fatalf("event packet %d starts a segment at %d after one that ended at duration %d, not 0xFFFF", i, p.Timestamp, rc.last)
		}
		if p.Marker {
			t.Fatalf("event packet %d: a new segment with the marker bit", i)
		}
		cur.segments++
		rc.segTS = p.Timestamp
	default:
		if p.Marker {
			t.Fatalf("event packet %d repeats the marker bit", i)
		}
		if duration < rc.last {
			t.Fatalf("event packet %d: duration %d after %d in the same segment: it wrapped or went back", i, duration, rc.last)
		}
		if rc.ended && (!end || duration != rc.last) {
			t.Fatalf("event packet %d after the end: end bit %v, duration %d; want a repeat of the end at %d", i, end, duration, rc.last)
		}
	}
	if end {
		rc.ended = true
		cur.ends++
	}
	rc.last = duration
	cur.length = rc.segTS - cur.start + uint32(duration)
}

// receiveEvents reads what ep is sent after prev until a packet of audioPT
// arrives, and returns the events of eventPT before it as a receiver
// decodes them. Sequence numbers must run on from prev's without a gap or
// a repeat.
func receiveEvents(t *testing.T, ep *endpoint, prev rtp.Packet, eventPT, audioPT uint8) []receivedEvent {
	t.Helper()
	rc := &eventReceiver{t: t}
	rc.read(ep, &prev, eventPT, audioPT, -1)
	return rc.events
}

// read takes what ep is sent after *prev, as receiveEvents does, until a
// packet of audioPT arrives or, when n is not negative, n packets of
// eventPT have; *prev is left at the last packet read.
func (rc *eventReceiver) read(ep *endpoint, prev *rtp.Packet, eventPT, audioPT uint8, n int) {
	t := rc.t
	t.Helper()
	for i := 0; i != n; i++ {
		p, ok := ep.recv(2 * time.Second)
		if !ok {
			t.Fatalf("packet %d not delivered; events so far %+v", i, rc.events)
		}
		if p.SequenceNumber != prev.SequenceNumber+1 || p.SSRC != prev.SSRC {
			t.Fatalf("packet %d: seq %d ssrc %#x after seq %d ssrc %#x", i, p.SequenceNumber, p.SSRC, prev.SequenceNumber, prev.SSRC)
		}
		*prev = p
		switch p.PayloadType {
		case audioPT:
			return
		case eventPT:
			rc.take(i, p)
		default:
			t.Fatalf("packet %d: payload type %d", i, p.PayloadType)
		}
	}
}

// eventPacket is one telephone-event packet a test endpoint sends: its
// timestamp (from the event's start) and its block.
type eventPacket struct {
	at       uint32
	duration uint16
	end      bool
}

// sendEvent sends an event's packets from ep, digit code, starting at
// timestamp start with sequence number seq, and returns the sequence
// number after them.
func sendEvent(ep *endpoint, to netip.AddrPort, pt uint8, ssrc uint32, seq uint16, start uint32, code uint8, pkts []eventPacket) uint16 {
	for i, e := range pkts {
		flags := byte(10) // volume
		if e.end {
			flags |= eventEndBit
		}
		ep.send(to, rtp.Header{PayloadType: pt, SequenceNumber: seq, Timestamp: start + e.at, SSRC: ssrc, Marker: i == 0},
			[]byte{code, flags, byte(e.duration >> 8), byte(e.duration)})
		seq++
	}
	return seq
}

// segmented is the packets of an event at most maximum ticks a segment
// (RFC 4733 §2.5.1.3) for the durations from its start given: each
// segment but the last ends with a packet of the maximum, and the final
// duration is sent three times with the end bit.
func segmented(lengths ...uint32) []eventPacket {
	var pkts []eventPacket
	var seg uint32
	for i, l := range lengths {
		for l-seg > maxEventDuration {
			pkts = append(pkts, eventPacket{at: seg, duration: maxEventDuration})
			seg += maxEventDuration
		}
		if i < len(lengths)-1 {
			pkts = append(pkts, eventPacket{at: seg, duration: uint16(l - seg)})
		}
	}
	for range 3 {
		pkts = append(pkts, eventPacket{at: seg, duration: uint16(lengths[len(lengths)-1] - seg), end: true})
	}
	return pkts
}

// A key held longer than the 16-bit duration holds on the clock it is
// carried to goes there in RFC 4733 segments of that clock: a segment
// that fills up ends with a packet of 0xFFFF, the next starts 0xFFFF
// later, and only the last carries the end bit; segments the source sent
// on its own clock are put back together first. What arrives is one
// digit of the length pressed, whichever way it crosses and whether the
// call is transcoded or relayed.
func TestLongDigitAcrossClocks(t *testing.T) {
	const opus48 = "a=rtpmap:111 opus/48000/2"
	pcmuFrame := encodeTone(t, codec.PCMU, 8000, 1)[0]
	opusFrame := encodeTone(t, codec.Opus, 48000, 1)[0]
	tests := []struct {
		name string
		// SDP of the endpoint that sends the digit and of the one it
		// goes to; the sender is leg A when fromA.
		fromSDP, toSDP     []string
		fromA              bool
		transcoded         bool
		eventPT, wantPT    uint8
		audioPT, wantAudio uint8
		audio              []byte
		press              []eventPacket
		wantLength         uint32
		wantSegments       int
	}{
		{
			name:    "8 kHz to 48 kHz, transcoded",
			fromSDP: []string{"0 101", "a=rtpmap:101 telephone-event/8000"},
			toSDP:   []string{"111 110", opus48, "a=rtpmap:110 telephone-event/48000"},
			fromA:   true, transcoded: true, eventPT: 101, wantPT: 110, audioPT: 0, wantAudio: 111, audio: pcmuFrame,
			press:        segmented(4000, 8000, 12000, 16000), // 2 s
			wantLength:   96000,
			wantSegments: 2,
		},
		{
			// Packets lost: one arrives two segments of 48 kHz on.
			name:    "8 kHz to 48 kHz past two segments at once",
			fromSDP: []string{"0 101", "a=rtpmap:101 telephone-event/8000"},
			toSDP:   []string{"111 110", opus48, "a=rtpmap:110 telephone-event/48000"},
			fromA:   true, transcoded: true, eventPT: 101, wantPT: 110, audioPT: 0, wantAudio: 111, audio: pcmuFrame,
			press:        segmented(4000, 8000, 24000, 28000), // 3.5 s
			wantLength:   168000,
			wantSegments: 3,
		},
		{
			name:       "48 kHz to 8 kHz, transcoded",
			fromSDP:    []string{"111 110", opus48, "a=rtpmap:110 telephone-event/48000"},
			toSDP:      []string{"0 101", "a=rtpmap:101 telephone-event/8000"},
			transcoded: true, eventPT: 110, wantPT: 101, audioPT: 111, wantAudio: 0, audio: opusFrame,
			press:        segmented(24000, 48000, 78000, 96000), // 2 s in two 48 kHz segments
			wantLength:   16000,
			wantSegments: 1,
		},
		{
			// Seven segments at 48 kHz make 9 s: more than 8 kHz holds in one.
			name:       "48 kHz to 8 kHz past the 8 kHz maximum",
			fromSDP:    []string{"111 110", opus48, "a=rtpmap:110 telephone-event/48000"},
			toSDP:      []string{"0 101", "a=rtpmap:101 telephone-event/8000"},
			transcoded: true, eventPT: 110, wantPT: 101, audioPT: 111, wantAudio: 0, audio: opusFrame,
			press:        segmented(100000, 200000, 300000, 393210, 413210, 432000),
			wantLength:   72000,
			wantSegments: 2,
		},
		{
			// Both legs speak Opus; the caller's telephone-event is at 8 kHz.
			name:    "8 kHz to 48 kHz, relayed",
			fromSDP: []string{"111 101", opus48, "a=rtpmap:101 telephone-event/8000"},
			toSDP:   []string{"111 96", opus48, "a=rtpmap:96 telephone-event/48000"},
			fromA:   true, eventPT: 101, wantPT: 96, audioPT: 111, wantAudio: 111, audio: opusFrame,
			press:        segmented(4000, 8000, 12000, 16000),
			wantLength:   96000,
			wantSegments: 2,
		},
		{
			name:    "48 kHz to 8 kHz, relayed",
			fromSDP: []string{"111 96", opus48, "a=rtpmap:96 telephone-event/48000"},
			toSDP:   []string{"111 101", opus48, "a=rtpmap:101 telephone-event/8000"},
			eventPT: 96, wantPT: 101, audioPT: 111, wantAudio: 111, audio: opusFrame,
			press:        segmented(24000, 48000, 78000, 96000),
			wantLength:   16000,
			wantSegments: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			from, to := newEndpoint(t), newEndpoint(t)
			aSDP, bSDP := to.sdp(tc.toSDP[0], tc.toSDP[1:]...), from.sdp(tc.fromSDP[0], tc.fromSDP[1:]...)
			if tc.fromA {
				aSDP, bSDP = from.sdp(tc.fromSDP[0], tc.fromSDP[1:]...), to.sdp(tc.toSDP[0], tc.toSDP[1:]...)
			}
			nodeA, nodeB, transcoded := bridge(t, e, "s1", aSDP, bSDP)
			if transcoded != tc.transcoded {
				t.Fatalf("transcoding %v, want %v", transcoded, tc.transcoded)
			}
			node := nodeB
			if tc.fromA {
				node = nodeA
			}
			// Audio first, so that the stream to the far end is running
			// when the digit comes.
			from.send(node, rtp.Header{PayloadType: tc.audioPT, SequenceNumber: 100, Timestamp: 1000, SSRC: 7}, tc.audio)
			before, ok := to.recv(2 * time.Second)
			if !ok || before.PayloadType != tc.wantAudio {
				t.Fatalf("audio before the digit: ok %v pt %d", ok, before.PayloadType)
			}
			seq := sendEvent(from, node, tc.eventPT, 7, 101, 5000, 1, tc.press)
			// Audio after the digit ends what the far end is read for.
			from.send(node, rtp.Header{PayloadType: tc.audioPT, SequenceNumber: seq, Timestamp: 900000, SSRC: 7}, tc.audio)
			events := receiveEvents(t, to, before, tc.wantPT, tc.wantAudio)
			if len(events) != 1 {
				t.Fatalf("the far end decodes %d events, want one digit: %+v", len(events), events)
			}
			if ev := events[0]; ev.code != 1 || ev.length != tc.wantLength || ev.segments != tc.wantSegments || ev.ends != 3 {
				t.Fatalf("the far end decodes %+v; want digit 1 of %d ticks in %d segments, its end sent 3 times",
					ev, tc.wantLength, tc.wantSegments)
			}
		})
	}
}

// What belongs to the event being carried: its segments' timestamps, and
// after its end only those; another key, a timestamp off the segment grid
// or a marker on a new timestamp is another press.
func TestEventTrackContinues(t *testing.T) {
	const start = 100000
	running := eventTrack{srcStart: start, srcLatest: maxEventDuration, code: 5, active: true}
	ended := running
	ended.ended = true
	tests := []struct {
		name   string
		track  eventTrack
		code   uint8
		ts     uint32
		marker bool
		want   bool
	}{
		{name: "a repeat of the start", track: ended, code: 5, ts: start, marker: true, want: true},
		{name: "the next segment", track: running, code: 5, ts: start + 2*maxEventDuration, want: true},
		{name: "a segment it had, after the end", track: ended, code: 5, ts: start + maxEventDuration, want: true},
		{name: "a new segment after the end", track: ended, code: 5, ts: start + 2*maxEventDuration},
		{name: "a marker on a new timestamp", track: running, code: 5, ts: start + 2*maxEventDuration, marker: true},
		{name: "off the segment grid", track: running, code: 5, ts: start + 160},
		{name: "before the start", track: running, code: 5, ts: start - maxEventDuration},
		{name: "another key", track: running, code: 6, ts: start},
		{name: "nothing tracked", track: eventTrack{}, code: 0, ts: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.track.continues(tc.code, tc.ts, tc.marker); got != tc.want {
				t.Fatalf("continues = %v, want %v", got, tc.want)
			}
		})
	}
}

// A digit pressed while a transcoded packet of the destination's longer
// packet time is half full goes after that audio, sent short, and before
// the audio after it: what the caller said before the key press is
// neither lost nor heard after the digit.
func TestDigitFollowsTheAudioBeforeIt(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0 101", "a=rtpmap:101 telephone-event/8000"),
		b.sdp("8 101", "a=rtpmap:101 telephone-event/8000", "a=ptime:40"))
	tone := encodeTone(t, codec.PCMU, 8000, 5)
	for i := range 3 {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(1 + i), Timestamp: uint32(i * 160), SSRC: 7, Marker: i == 0}, tone[i])
	}
	sendEvent(a, nodeA, 101, 7, 4, 480, 5, []eventPacket{{duration: 160}, {duration: 320}, {duration: 480, end: true}})
	for i := range 2 {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(7 + i), Timestamp: uint32(960 + i*160), SSRC: 7}, tone[3+i])
	}
	got := receivePackets(t, b, 6)
	start := got[0].Timestamp
	want := []struct {
		pt     uint8
		ts     uint32 // from the first
		size   int
		marker bool
	}{
		{pt: 8, ts: 0, size: 320, marker: true}, // 40 ms
		{pt: 8, ts: 320, size: 160},             // the 20 ms before the digit, sent short
		{pt: 101, ts: 480, size: 4, marker: true},
		{pt: 101, ts: 480, size: 4},
		{pt: 101, ts: 480, size: 4},
		{pt: 8, ts: 960, size: 320}, // the 40 ms after it
	}
	for i, p := range got {
		w := want[i]
		if p.PayloadType != w.pt || p.Timestamp-start != w.ts || len(p.Payload) != w.size || (w.marker && !p.Marker) || (i > 0 && p.SequenceNumber != got[i-1].SequenceNumber+1) {
			t.Fatalf("packet %d: pt %d ts +%d, %d bytes, marker %v, seq %d; want pt %d ts +%d, %d bytes, marker %v, the next seq",
				i, p.PayloadType, p.Timestamp-start, len(p.Payload), p.Marker, p.SequenceNumber, w.pt, w.ts, w.size, w.marker)
		}
	}
	b.expectNothing(100 * time.Millisecond)
}

// A re-INVITE or UPDATE that changes nothing about how a digit is carried
// (a session refresh, a new address, a changed packet time) while a key
// is held past a segment of either clock leaves the digit as it was: the
// far end goes on decoding one press, not a second one from segments laid
// out anew or from a segment of the source taken for a new event.
func TestLongDigitGoesOnAcrossAReInvite(t *testing.T) {
	const opus48 = "a=rtpmap:111 opus/48000/2"
	pcmuFrame := encodeTone(t, codec.PCMU, 8000, 1)[0]
	opusFrame := encodeTone(t, codec.Opus, 48000, 1)[0]
	tests := []struct {
		name               string
		fromSDP, toSDP     []string // the sender's (leg A when fromA) and the receiver's
		fromA              bool
		eventPT, wantPT    uint8
		audioPT, wantAudio uint8
		audio              []byte
		press              []eventPacket
		reInviteAfter      int // packets of the press sent before the re-INVITE
		deliveredBefore    int // event packets the far end gets for them
		wantLength         uint32
		wantSegments       int
	}{
		{
			name:    "8 kHz to 48 kHz, transcoded",
			fromSDP: []string{"0 101", "a=rtpmap:101 telephone-event/8000"},
			toSDP:   []string{"111 110", opus48, "a=rtpmap:110 telephone-event/48000"},
			fromA:   true, eventPT: 101, wantPT: 110, audioPT: 0, wantAudio: 111, audio: pcmuFrame,
			press:         segmented(4000, 8000, 12000, 16000),
			reInviteAfter: 3, deliveredBefore: 4, // 72000 ticks at 48 kHz: the first segment ended, the second begun
			wantLength: 96000, wantSegments: 2,
		},
		{
			name:    "48 kHz to 8 kHz, transcoded",
			fromSDP: []string{"111 110", opus48, "a=rtpmap:110 telephone-event/48000"},
			toSDP:   []string{"0 101", "a=rtpmap:101 telephone-event/8000"},
			eventPT: 110, wantPT: 101, audioPT: 111, wantAudio: 0, audio: opusFrame,
			press:         segmented(24000, 48000, 78000, 96000),
			reInviteAfter: 4, deliveredBefore: 4, // up to the first packet of the source's second segment
			wantLength: 16000, wantSegments: 1,
		},
		{
			name:    "8 kHz to 48 kHz, relayed",
			fromSDP: []string{"111 101", opus48, "a=rtpmap:101 telephone-event/8000"},
			toSDP:   []string{"111 96", opus48, "a=rtpmap:96 telephone-event/48000"},
			fromA:   true, eventPT: 101, wantPT: 96, audioPT: 111, wantAudio: 111, audio: opusFrame,
			press:         segmented(4000, 8000, 12000, 16000),
			reInviteAfter: 3, deliveredBefore: 4,
			wantLength: 96000, wantSegments: 2,
		},
		{
			name:    "48 kHz to 8 kHz, relayed",
			fromSDP: []string{"111 96", opus48, "a=rtpmap:96 telephone-event/48000"},
			toSDP:   []string{"111 101", opus48, "a=rtpmap:101 telephone-event/8000"},
			eventPT: 96, wantPT: 101, audioPT: 111, wantAudio: 111, audio: opusFrame,
			press:         segmented(24000, 48000, 78000, 96000),
			reInviteAfter: 4, deliveredBefore: 4,
			wantLength: 16000, wantSegments: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			from, to := newEndpoint(t), newEndpoint(t)
			fromSDP, toSDP := from.sdp(tc.fromSDP[0], tc.fromSDP[1:]...), to.sdp(tc.toSDP[0], tc.toSDP[1:]...)
			aSDP, bSDP, node := toSDP, fromSDP, LegB
			if tc.fromA {
				aSDP, bSDP, node = fromSDP, toSDP, LegA
			}
			nodeA, nodeB, _ := bridge(t, e, "s1", aSDP, bSDP)
			dst := nodeB
			if node == LegA {
				dst = nodeA
			}
			from.send(dst, rtp.Header{PayloadType: tc.audioPT, SequenceNumber: 100, Timestamp: 1000, SSRC: 7}, tc.audio)
			before, ok := to.recv(2 * time.Second)
			if !ok {
				t.Fatal("audio before the digit not delivered")
			}
			seq := sendEvent(from, dst, tc.eventPT, 7, 101, 5000, 1, tc.press[:tc.reInviteAfter])
			// What was sent so far has gone out under the route the
			// re-INVITE replaces: the press spans it.
			rc, prev := &eventReceiver{t: t}, before
			rc.read(to, &prev, tc.wantPT, tc.wantAudio, tc.deliveredBefore)
			// The caller refreshes the session with the SDP it had.
			if _, _, err := e.Update(context.Background(), "s1", LegA, aSDP, false); err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.press[tc.reInviteAfter:] {
				flags := byte(10)
				if p.end {
					flags |= eventEndBit
				}
				from.send(dst, rtp.Header{PayloadType: tc.eventPT, SequenceNumber: seq, Timestamp: 5000 + p.at, SSRC: 7},
					[]byte{1, flags, byte(p.duration >> 8), byte(p.duration)})
				seq++
			}
			from.send(dst, rtp.Header{PayloadType: tc.audioPT, SequenceNumber: seq, Timestamp: 900000, SSRC: 7}, tc.audio)
			rc.read(to, &prev, tc.wantPT, tc.wantAudio, -1)
			if len(rc.events) != 1 {
				t.Fatalf("the far end decodes %d events, want one digit: %+v", len(rc.events), rc.events)
			}
			if ev := rc.events[0]; ev.code != 1 || ev.length != tc.wantLength || ev.segments != tc.wantSegments || ev.ends != 3 {
				t.Fatalf("the far end decodes %+v; want digit 1 of %d ticks in %d segments, its end sent 3 times",
					ev, tc.wantLength, tc.wantSegments)
			}
		})
	}
}

// A packet from before an event segment end the relay inserted that comes
// late, reordered behind it, goes out with a number of its own, not one
// the stream sent already.
func TestLateAudioAfterAnInsertedSegmentEndHasANumberOfItsOwn(t *testing.T) {
	const opus48 = "a=rtpmap:111 opus/48000/2"
	opusFrame := encodeTone(t, codec.Opus, 48000, 1)[0]
	e, _ := newTestEngine(t, nil)
	from, to := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", from.sdp("111 101", opus48, "a=rtpmap:101 telephone-event/8000"), to.sdp("111 96", opus48, "a=rtpmap:96 telephone-event/48000"))
	from.send(nodeA, rtp.Header{PayloadType: 111, SequenceNumber: 100, Timestamp: 1000, SSRC: 7}, opusFrame)
	// 101 is held back; 12000 ticks at 8 kHz are past a 48 kHz segment.
	seq := sendEvent(from, nodeA, 101, 7, 102, 5000, 1, segmented(4000, 8000, 12000, 16000))
	from.send(nodeA, rtp.Header{PayloadType: 111, SequenceNumber: 101, Timestamp: 1960, SSRC: 7}, opusFrame)
	from.send(nodeA, rtp.Header{PayloadType: 111, SequenceNumber: seq, Timestamp: 900000, SSRC: 7}, opusFrame)

	// Two audio packets, the six event packets, the segment end inserted
	// and the late audio.
	const want = 10
	sent := map[uint16]uint8{}
	for i := range want {
		p, ok := to.recv(2 * time.Second)
		if !ok {
			t.Fatalf("%d packets relayed, want %d", i, want)
		}
		if pt, dup := sent[p.SequenceNumber]; dup {
			t.Fatalf("sequence number %d sent twice: payload types %d and %d", p.SequenceNumber, pt, p.PayloadType)
		}
		sent[p.SequenceNumber] = p.PayloadType
	}
}

// The relay's numbering after event segment ends it inserted: a late
// packet from before one keeps its number from before it, and one older
// than the move before that, whose number is not kept, is not sent.
func TestRelayNumbersLatePacketsAcrossShifts(t *testing.T) {
	o := newOutStream(true)
	now := time.Now()
	relay := func(seq uint16) (uint16, bool) {
		out, _, _, ok := o.relay(9, seq, uint32(seq)*160, 8000, now)
		return out, ok
	}
	relay(10)
	relay(11)
	o.shift(11, 1) // after 11's event packet went out as 11, its segment end as 12
	relay(12)      // as 13
	relay(14)
	o.shift(14, 2)
	tests := []struct {
		name string
		seq  uint16
		want uint16
		ok   bool
	}{
		{name: "after the last move", seq: 15, want: 18, ok: true},
		{name: "between the moves", seq: 13, want: 14, ok: true},
		{name: "before both", seq: 9, ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := relay(tc.seq)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Fatalf("source %d numbered %d (sent %v), want %d (sent %v)", tc.seq, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// A relayed packet too old to be given a number of its own is dropped and
// counted as such on its leg.
func TestAudioTooLateForANumberIsCountedDropped(t *testing.T) {
	g := newRig(t, pcmu(), pcmu())
	packet := func(seq uint16) []byte {
		pkt, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 9}, Payload: make([]byte, 160)}).Marshal()
		return pkt
	}
	for _, seq := range []uint16{10, 11} {
		g.d.handleRTP(packet(seq), g.src, time.Now(), 0)
	}
	g.d.out.shift(11, 1)
	g.d.handleRTP(packet(14), g.src, time.Now(), 0)
	g.d.out.shift(14, 1)
	g.d.handleRTP(packet(9), g.src, time.Now(), 0)
	if got := g.d.from.drops[dropTooLate].Load(); got != 1 {
		t.Fatalf("%d packets counted too late, want 1", got)
	}
}
