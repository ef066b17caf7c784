package engine

import (
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// The audio a transcoder holds back for a 40 or 60 ms packet when the
// source stops (DTX, voice activity detection, a hold) goes out as the
// talkspurt's last packet, shorter than the others, numbered and
// timestamped on from them; the next talkspurt starts with a marker after
// it.
func TestTalkspurtTailIsSent(t *testing.T) {
	tests := []struct {
		name  string
		bSDP  []string
		codec codec.Name
		rate  int // decoded at
	}{
		{name: "PCMU to PCMA in 40 ms", bSDP: []string{"8", "a=ptime:40"}, codec: codec.PCMA, rate: 8000},
		{name: "PCMU to Opus in 60 ms", bSDP: []string{"111", "a=rtpmap:111 opus/48000/2", "a=ptime:60"}, codec: codec.Opus, rate: 48000},
	}
	const (
		frames = 5 // 100 ms: a 20 or 40 ms tail
		spurt  = frames * frameDuration
	)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			e.talkspurtGrace = defaultTalkspurtGrace // as configured outside tests
			a, b := newEndpoint(t), newEndpoint(t)
			nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp(tc.bSDP[0], tc.bSDP[1:]...))
			tone := encodeTone(t, codec.PCMU, 8000, 2*frames)
			talk := func(seq uint16, ts uint32, frames [][]byte) {
				for i, payload := range frames {
					a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: seq + uint16(i), Timestamp: ts + uint32(i*160), SSRC: 7, Marker: i == 0}, payload)
				}
			}
			talk(100, 5000, tone[:frames])

			// However a stall of the test cut the talkspurt, all of it
			// arrives, each packet following on from the one before.
			info, _ := codec.Lookup(string(tc.codec))
			dec := newTestDecoder(t, tc.codec, tc.rate)
			pcm := make([]int16, 6000)
			var (
				got  time.Duration
				last rtp.Packet
				end  uint32 // the timestamp after the last packet
			)
			for i := 0; got < spurt; i++ {
				p, ok := b.recv(2 * time.Second)
				if !ok {
					t.Fatalf("%v of the %v talkspurt arrived", got, spurt)
				}
				if p.Marker != (i == 0) {
					t.Fatalf("packet %d: marker %v", i, p.Marker)
				}
				if i > 0 && (p.SequenceNumber != last.SequenceNumber+1 || p.Timestamp != end) {
					t.Fatalf("packet %d: seq %d ts %d after seq %d ending at %d", i, p.SequenceNumber, p.Timestamp, last.SequenceNumber, end)
				}
				n, err := dec.Decode(p.Payload, pcm)
				if err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				got += time.Duration(n) * time.Second / time.Duration(tc.rate)
				last, end = p, p.Timestamp+uint32(n*info.ClockRate/tc.rate)
			}
			if got != spurt {
				t.Fatalf("%v of audio for a %v talkspurt", got, spurt)
			}

			talk(100+frames, 5000+8000, tone[frames:])
			p, ok := b.recv(2 * time.Second)
			if !ok {
				t.Fatal("the next talkspurt did not arrive")
			}
			if !p.Marker || p.SequenceNumber != last.SequenceNumber+1 || int32(p.Timestamp-end) < 0 {
				t.Fatalf("next talkspurt: seq %d ts %d marker %v, after seq %d ending at %d", p.SequenceNumber, p.Timestamp, p.Marker, last.SequenceNumber, end)
			}
		})
	}
}

// The source is taken to have stopped once its next packet is a packet
// time and the grace late, whatever its packet time.
func TestTailWaitsAPacketTimeAndTheGracePastDue(t *testing.T) {
	tests := []struct {
		name        string
		span, grace time.Duration
		want        time.Duration
	}{
		{name: "20 ms source", span: 20 * time.Millisecond, grace: defaultTalkspurtGrace, want: 60 * time.Millisecond},
		{name: "60 ms source", span: 60 * time.Millisecond, grace: defaultTalkspurtGrace, want: 140 * time.Millisecond},
		{name: "no grace", span: 20 * time.Millisecond, want: 40 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tailWait(tc.span, tc.grace); got != tc.want {
				t.Fatalf("tailWait(%v, %v) = %v, want %v", tc.span, tc.grace, got, tc.want)
			}
		})
	}
}

// A transcoder that starts a stream anew, or stops carrying one, has no
// tail due and its timer unset: what it held is gone, and a wake-up for it
// would find nothing of the stream it was set for.
func TestStreamStartOrHaltForgetsTheTail(t *testing.T) {
	tests := []struct {
		name  string
		reset func(tc *transcoder, d *direction)
	}{
		{name: "halt", reset: func(tc *transcoder, _ *direction) { tc.halt() }},
		{name: "begin", reset: func(tc *transcoder, d *direction) { tc.begin(d, time.Now()) }},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, pcmu(), opus())
			tc := g.r.tc
			now := time.Now()
			tc.packets.add(copy(tc.packets.space(), make([]byte, 40)), 0) // something queued, for the tail to be
			tc.tailDue = now.Add(time.Hour)
			tc.arm(now)
			c.reset(tc, g.d)
			if !tc.tailDue.IsZero() || tc.pacing() {
				t.Fatalf("tail still due at %v, paced at %v", tc.tailDue, tc.pacedDue)
			}
			if tc.timer.Stop() {
				t.Fatal("timer still set")
			}
		})
	}
}
