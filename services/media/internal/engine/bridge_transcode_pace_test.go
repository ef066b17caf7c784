package engine

import (
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/sdpneg"
)

func pcma() codec.Info { i, _ := codec.Lookup("PCMA"); return i }

// pacedMinGap is less than any paced packet can follow the source packet
// it came from by: the timer sends it a packet time (10 ms) after the
// reader took the source packet, never sooner. Only this lower bound is
// checked; how late the timer is on a loaded machine is not.
const pacedMinGap = 5 * time.Millisecond

// A transcoding bridge toward an endpoint that asked for 10 ms packets
// sends the first of the two a 20 ms frame makes at once and the second
// 10 ms later, numbered, timestamped and marked as if they went out
// together.
func TestTranscodePacesPacketsShorterThanAFrame(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, transcoding := bridge(t, e, "s1", a.sdp("0"), b.sdp("8", "a=ptime:10"))
	if !transcoding {
		t.Fatal("PCMU to PCMA does not transcode")
	}
	const frames = 24
	var pkts []rtp.Packet
	for i, payload := range encodeTone(t, codec.PCMU, 8000, frames) {
		sent := time.Now()
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: 5000 + uint32(i*160), SSRC: 7, Marker: i == 0}, payload)
		pair := receivePackets(t, b, 2)
		if after := time.Since(sent); after < pacedMinGap {
			t.Fatalf("frame %d: its second 10 ms packet came %v after it, want it paced 10 ms after the first", i, after)
		}
		pkts = append(pkts, pair...)
	}
	// Timestamps 80 apart, one number after another, the marker on the first.
	checkTone(t, decodePackets(t, newTestDecoder(t, codec.PCMA, 8000), pkts, 8, 10, true), 8000)
	b.expectNothing(100 * time.Millisecond)
}

// Source packets arriving faster than the paced packets go out (here back
// to back) have every paced packet sent ahead of the next one's audio:
// nothing reordered, nothing dropped, and the last one still paced.
func TestTranscodeSendsPacedPacketsBeforeTheNextFrame(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("8", "a=ptime:10"))
	const frames = 6
	var sent time.Time
	for i, payload := range encodeTone(t, codec.PCMU, 8000, frames) {
		sent = time.Now()
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: 5000 + uint32(i*160), SSRC: 7, Marker: i == 0}, payload)
	}
	pkts := receivePackets(t, b, 2*frames)
	if after := time.Since(sent); after < pacedMinGap {
		t.Fatalf("the last frame's second 10 ms packet came %v after it, want it paced", after)
	}
	decodePackets(t, newTestDecoder(t, codec.PCMA, 8000), pkts, 8, 10, true)
	b.expectNothing(100 * time.Millisecond)
}

// pacedRig is a rig transcoding 20 ms PCMU into 10 ms PCMA, driven by
// hand: its timer's wake-ups are dropped, and the test calls wake itself.
type pacedRig struct {
	*rig
	t    *testing.T
	tone [][]byte
	pkt  []byte
	buf  []byte
}

func newPacedRig(t *testing.T, every time.Duration) *pacedRig {
	t.Helper()
	g := newRig(t, pcmu(), pcma())
	g.r.packetTime = every
	return &pacedRig{rig: g, t: t, tone: encodeTone(t, codec.PCMU, 8000, 8), pkt: make([]byte, maxPacket), buf: make([]byte, maxPacket)}
}

// source has the reader take source packet i of SSRC ssrc, holding
// frames 20 ms frames, at now.
func (g *pacedRig) source(i int, ssrc uint32, frames int, now time.Time) {
	g.t.Helper()
	n, err := (&rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: 5000 + uint32(i*160), SSRC: ssrc}).MarshalTo(g.pkt)
	if err != nil {
		g.t.Fatal(err)
	}
	for f := range frames {
		n += copy(g.pkt[n:], g.tone[(i+f)%len(g.tone)])
	}
	g.d.handleRTP(g.pkt[:n], g.src, now, 0)
}

// event has the reader take a telephone-event packet at source timestamp
// ts, at now.
func (g *pacedRig) event(i int, ts uint32, now time.Time) {
	g.t.Helper()
	raw, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 101, SequenceNumber: uint16(100 + i), Timestamp: ts, SSRC: 7, Marker: true},
		Payload: []byte{5, 0x0a, 0, 160}}).Marshal()
	if err != nil {
		g.t.Fatal(err)
	}
	g.d.handleRTP(raw, g.src, now, 0)
}

// sent returns what the direction sent since the last call: every send
// is done by the time the call that made it returns.
func (g *pacedRig) sent() []rtp.Packet {
	g.t.Helper()
	var out []rtp.Packet
	for {
		_ = g.sink.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := g.sink.Read(g.buf)
		if err != nil {
			return out
		}
		var p rtp.Packet
		if err := p.Unmarshal(append([]byte(nil), g.buf[:n]...)); err != nil {
			g.t.Fatal(err)
		}
		out = append(out, p)
	}
}

// expect checks that what was sent since the last call is count packets,
// each following on from prev (nil for none), and returns the last.
func (g *pacedRig) expect(what string, count int, prev *rtp.Packet) *rtp.Packet {
	g.t.Helper()
	got := g.sent()
	if len(got) != count {
		g.t.Fatalf("%s: %d packets sent, want %d", what, len(got), count)
	}
	for i := range got {
		p := &got[i]
		if prev != nil && p.PayloadType == prev.PayloadType && (p.SequenceNumber != prev.SequenceNumber+1 || p.Timestamp != prev.Timestamp+80) {
			g.t.Fatalf("%s: packet %d seq %d ts %d after seq %d ts %d", what, i, p.SequenceNumber, p.Timestamp, prev.SequenceNumber, prev.Timestamp)
		}
		prev = p
	}
	return prev
}

// Each packet after a frame's first is sent once due, and not before: a
// source packet of two frames makes three paced packets, 10, 20 and 30 ms
// after the first; a timer late past two due times sends both.
func TestPacedPacketsGoOutWhenDue(t *testing.T) {
	g := newPacedRig(t, 10*time.Millisecond)
	tc, now := g.r.tc, time.Now()
	g.source(0, 7, 2, now)
	first := g.expect("the source packet", 1, nil)
	if !first.Marker || len(first.Payload) != 80 {
		t.Fatalf("first packet: marker %v, %d octets", first.Marker, len(first.Payload))
	}
	if !tc.pacing() || !tc.pacedDue.Equal(now.Add(10*time.Millisecond)) || !tc.timerSet {
		t.Fatalf("paced at %v (timer set %v), want %v", tc.pacedDue, tc.timerSet, now.Add(10*time.Millisecond))
	}
	g.d.wake(tc, now.Add(9*time.Millisecond))
	last := g.expect("an early wake-up", 0, first)
	g.d.wake(tc, now.Add(10*time.Millisecond))
	last = g.expect("10 ms on", 1, last)
	if last.Marker {
		t.Fatal("a paced packet carries the marker")
	}
	g.d.wake(tc, now.Add(35*time.Millisecond))
	g.expect("35 ms on", 2, last)
	if tc.pacing() || tc.packets.pending() {
		t.Fatalf("after the last: paced at %v, pending %v", tc.pacedDue, tc.packets.pending())
	}
}

// Whatever the transcoder sends next sends the packets still waiting for
// their time first, whether due or not, and in their place: the next
// source packet, one of a new source (which begins a new stream, with a
// marker, after them), an event packet.
func TestPacedPacketsGoBeforeWhatFollows(t *testing.T) {
	tests := []struct {
		name   string
		next   func(g *pacedRig, now time.Time)
		count  int  // packets sent by next, the paced one included
		marker bool // the packet after the paced one starts a talkspurt
		paced  bool // and leaves one paced
	}{
		{name: "next source packet", next: func(g *pacedRig, now time.Time) { g.source(1, 7, 1, now) }, count: 2, paced: true},
		{name: "new source", next: func(g *pacedRig, now time.Time) { g.source(1, 9, 1, now) }, count: 2, marker: true, paced: true},
		{name: "event", next: func(g *pacedRig, now time.Time) { g.event(1, 5000+160, now) }, count: 2, marker: true},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := newPacedRig(t, 10*time.Millisecond)
			tc, now := g.r.tc, time.Now()
			g.source(0, 7, 1, now)
			first := g.expect("the first source packet", 1, nil)
			next := now.Add(3 * time.Millisecond)
			c.next(g, next)
			got := g.sent()
			if len(got) != c.count {
				t.Fatalf("%d packets sent, want %d", len(got), c.count)
			}
			paced, after := got[0], got[1]
			if paced.PayloadType != first.PayloadType || paced.SequenceNumber != first.SequenceNumber+1 || paced.Timestamp != first.Timestamp+80 || paced.Marker {
				t.Fatalf("first sent: %+v, want the paced packet after %+v", paced.Header, first.Header)
			}
			if after.SequenceNumber != paced.SequenceNumber+1 || after.Marker != c.marker || int32(after.Timestamp-paced.Timestamp) < 80 {
				t.Fatalf("then: %+v after %+v", after.Header, paced.Header)
			}
			if tc.pacing() != c.paced || c.paced && !tc.pacedDue.Equal(next.Add(10*time.Millisecond)) {
				t.Fatalf("paced %v at %v", tc.pacing(), tc.pacedDue)
			}
		})
	}
}

// queueDroppingChanges are what drops the audio a transcoder holds
// back, paced packets included, rather than send it: a route without the
// transcoder, none, a hold, a halt.
var queueDroppingChanges = []struct {
	name   string
	change func(g *pacedRig)
}{
	{name: "route without the transcoder", change: func(g *pacedRig) {
		r := *g.r
		r.mode, r.tc = routePassthrough, nil
		g.d.route.Store(&r)
	}},
	{name: "no route", change: func(g *pacedRig) { g.d.route.Store(nil) }},
	{name: "hold", change: func(g *pacedRig) {
		p := *g.d.to.peer.Load()
		p.direction = sdpneg.SendOnly
		g.d.to.peer.Store(&p)
	}},
	{name: "halt", change: func(g *pacedRig) { g.r.tc.halt() }},
}

// A paced packet goes out only under the route and transcoder that paced
// it, as a tail does: a new route keeping the transcoder is taken up, and
// the packet goes out as it says; a route without it, a hold, a halt
// drop it.
func TestPacedPacketFollowsTheRoute(t *testing.T) {
	tests := []struct {
		name   string
		change func(g *pacedRig)
		pt     uint8 // payload type the paced packet goes out as, 0 for dropped
	}{
		{name: "unchanged", change: func(*pacedRig) {}, pt: 111},
		{name: "route keeping the transcoder, another payload type", change: func(g *pacedRig) {
			r := *g.r
			r.audioPT = 112
			g.d.route.Store(&r)
		}, pt: 112},
	}
	for _, c := range queueDroppingChanges {
		tests = append(tests, struct {
			name   string
			change func(g *pacedRig)
			pt     uint8
		}{name: c.name, change: c.change})
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := newPacedRig(t, 10*time.Millisecond)
			tc, now := g.r.tc, time.Now()
			g.source(0, 7, 1, now)
			first := g.expect("the source packet", 1, nil)
			c.change(g)
			g.d.wake(tc, now.Add(10*time.Millisecond))
			got := g.sent()
			switch {
			case c.pt == 0 && len(got) > 0:
				t.Fatalf("sent %+v, want it dropped", got[0].Header)
			case c.pt == 0:
			case len(got) != 1:
				t.Fatalf("%d packets sent, want the paced one", len(got))
			case got[0].PayloadType != c.pt || got[0].SequenceNumber != first.SequenceNumber+1 || got[0].Timestamp != first.Timestamp+80:
				t.Fatalf("sent %+v after %+v, want payload type %d", got[0].Header, first.Header, c.pt)
			}
			if tc.pacing() || tc.packets.pending() {
				t.Fatalf("paced at %v, pending %v: still queued", tc.pacedDue, tc.packets.pending())
			}
		})
	}
}

// Packets of a frame or longer are sent as the frames make them, and set
// no timer but, while a packet is held back, the tail's.
func TestWholeFramePacketsAreNotPaced(t *testing.T) {
	tests := []struct {
		name     string
		every    time.Duration
		timerSet []bool // after each source packet
	}{
		{name: "20 ms", every: 20 * time.Millisecond, timerSet: []bool{false, false, false, false}},
		{name: "40 ms", every: 40 * time.Millisecond, timerSet: []bool{true, false, true, false}},
		{name: "60 ms", every: 60 * time.Millisecond, timerSet: []bool{true, true, false, true}},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := newPacedRig(t, c.every)
			tc, now := g.r.tc, time.Now()
			for i, want := range c.timerSet {
				g.source(i, 7, 1, now.Add(time.Duration(i)*frameDuration))
				if tc.pacing() || tc.timerSet != want {
					t.Fatalf("after source packet %d: paced %v, timer set %v, want %v", i, tc.pacing(), tc.timerSet, want)
				}
			}
		})
	}
}

// BenchmarkPacedPacket is a 20 ms PCMU frame transcoded into two 10 ms
// PCMA packets, the second sent by the timer's wake-up.
func BenchmarkPacedPacket(b *testing.B) {
	g := newRig(b, pcmu(), pcma())
	g.r.packetTime = 10 * time.Millisecond
	frames := encodeTone(b, codec.PCMU, 8000, 50)
	pkt := make([]byte, maxPacket)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		raw, _ := (&rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i) * 160, SSRC: 9}).MarshalTo(pkt)
		n := copy(pkt[raw:], frames[i%len(frames)])
		now := time.Now()
		g.d.handleRTP(pkt[:raw+n], g.src, now, 0)
		g.d.wake(g.r.tc, now.Add(10*time.Millisecond))
		i++
	}
}
