package engine

import (
	"testing"
	"time"

	"github.com/pion/rtp"

	"callgrid.dev/services/media/internal/codec"
)

// A transcoding bridge from an endpoint sending 60 ms packets to one that
// takes 20 ms sends each source packet's three as an endpoint would: the
// first at once, the last 40 ms after it, numbered, timestamped and
// marked as if they went out together.
func TestTranscodePacesASourcePacketsFrames(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, transcoding := bridge(t, e, "s1", a.sdp("0", "a=ptime:60"), b.sdp("8"))
	if !transcoding {
		t.Fatal("PCMU to PCMA does not transcode")
	}
	const packets = 8
	tone := encodeTone(t, codec.PCMU, 8000, 3*packets)
	var pkts []rtp.Packet
	for i := range packets {
		payload := append(append(append([]byte(nil), tone[3*i]...), tone[3*i+1]...), tone[3*i+2]...)
		sent := time.Now()
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: 5000 + uint32(i*480), SSRC: 7, Marker: i == 0}, payload)
		three := receivePackets(t, b, 3)
		// Paced 20 and 40 ms after the first; only a lower bound is
		// checked, as pacedMinGap explains.
		if after := time.Since(sent); after < 40*time.Millisecond-pacedMinGap {
			t.Fatalf("source packet %d: its third 20 ms packet came %v after it, want it paced 40 ms after the first", i, after)
		}
		pkts = append(pkts, three...)
	}
	checkTone(t, decodePackets(t, newTestDecoder(t, codec.PCMA, 8000), pkts, 8, 20, true), 8000)
	b.expectNothing(100 * time.Millisecond)
}

// sourceAt has the reader take a PCMU source packet numbered seq at
// source timestamp ts, holding frames 20 ms frames, at now.
func (g *pacedRig) sourceAt(seq uint16, ts uint32, frames int, now time.Time) {
	g.t.Helper()
	n, err := (&rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: ts, SSRC: 7}).MarshalTo(g.pkt)
	if err != nil {
		g.t.Fatal(err)
	}
	for f := range frames {
		n += copy(g.pkt[n:], g.tone[f%len(g.tone)])
	}
	g.d.handleRTP(g.pkt[:n], g.src, now, 0)
}

// expectRun checks that what was sent since the last call is count
// packets of ticks each, following on from prev (nil for none), and
// returns the last.
func (g *pacedRig) expectRun(what string, count int, ticks uint32, prev *rtp.Packet) *rtp.Packet {
	g.t.Helper()
	got := g.sent()
	if len(got) != count {
		g.t.Fatalf("%s: %d packets sent, want %d", what, len(got), count)
	}
	for i := range got {
		p := &got[i]
		if len(p.Payload) != int(ticks) {
			g.t.Fatalf("%s: packet %d holds %d octets, want %d", what, i, len(p.Payload), ticks)
		}
		if prev != nil && (p.SequenceNumber != prev.SequenceNumber+1 || p.Timestamp != prev.Timestamp+uint32(len(prev.Payload))) {
			g.t.Fatalf("%s: packet %d seq %d ts %d after seq %d ts %d", what, i, p.SequenceNumber, p.Timestamp, prev.SequenceNumber, prev.Timestamp)
		}
		prev = p
	}
	return prev
}

// A source packet of several frames makes packets that go out as an
// endpoint sends them, not in a burst: the first at once, each after it a
// packet time after the one before (a late timer sends all that are due).
// A frame that does not fill a packet waits for the next source packet,
// or the tail, not for a paced packet's time.
func TestMultiFrameSourcePacketsArePaced(t *testing.T) {
	tests := []struct {
		name   string
		every  time.Duration
		frames int    // in the source packet
		wakes  []int  // packets sent by a wake-up a packet time after the one before
		left   bool   // a frame that fills no packet is left queued
		ticks  uint32 // in each packet
	}{
		{name: "60 ms into 20 ms", every: 20 * time.Millisecond, frames: 3, wakes: []int{1, 1}, ticks: 160},
		{name: "40 ms into 20 ms", every: 20 * time.Millisecond, frames: 2, wakes: []int{1}, ticks: 160},
		{name: "100 ms into 40 ms", every: 40 * time.Millisecond, frames: 5, wakes: []int{1}, left: true, ticks: 320},
		{name: "60 ms into 10 ms", every: 10 * time.Millisecond, frames: 3, wakes: []int{1, 1, 1, 1, 1}, ticks: 80},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := newPacedRig(t, c.every)
			tc, now := g.r.tc, time.Now()
			g.sourceAt(100, 5000, c.frames, now)
			last := g.expectRun("the source packet", 1, c.ticks, nil)
			if !last.Marker {
				t.Fatal("first packet: no marker")
			}
			due := now
			for i, want := range c.wakes {
				due = due.Add(c.every)
				if !tc.pacing() || !tc.pacedDue.Equal(due) || !tc.timerSet {
					t.Fatalf("before wake-up %d: paced %v at %v (timer set %v), want at %v", i, tc.pacing(), tc.pacedDue, tc.timerSet, due)
				}
				g.d.wake(tc, due.Add(-time.Millisecond))
				last = g.expectRun("an early wake-up", 0, c.ticks, last)
				g.d.wake(tc, due)
				last = g.expectRun("a wake-up when due", want, c.ticks, last)
				if last.Marker {
					t.Fatal("a paced packet carries the marker")
				}
			}
			if tc.pacing() || tc.packets.pending() != c.left {
				t.Fatalf("after the last: paced %v at %v, pending %v", tc.pacing(), tc.pacedDue, tc.packets.pending())
			}
			g.d.wake(tc, due.Add(c.every))
			g.expectRun("a packet time after the last", 0, c.ticks, last)
		})
	}
}

// The next source packet sends what waits of the one before ahead of its
// own audio, due or not, and only what waits: a frame left short of a
// packet goes on into the next one.
func TestMultiFramePacedPacketsGoBeforeWhatFollows(t *testing.T) {
	g := newPacedRig(t, 40*time.Millisecond)
	tc, now := g.r.tc, time.Now()
	g.sourceAt(100, 5000, 5, now) // two 40 ms packets and a frame
	last := g.expectRun("the source packet", 1, 320, nil)
	g.sourceAt(101, 5000+5*160, 2, now.Add(5*time.Millisecond))
	// The paced packet, then the frame left with the next one's first,
	// the next one's last frame left.
	last = g.expectRun("the next source packet", 2, 320, last)
	if last.Marker || tc.pacing() || !tc.packets.pending() {
		t.Fatalf("marker %v, paced %v, pending %v", last.Marker, tc.pacing(), tc.packets.pending())
	}
}

// Packets paced out of a source packet of several frames go out only under
// the route and transcoder that paced them, as those of a frame do.
func TestMultiFramePacedPacketsFollowTheRoute(t *testing.T) {
	tests := []struct {
		name   string
		change func(g *pacedRig)
		sent   int // of the two paced packets
	}{
		{name: "unchanged", change: func(*pacedRig) {}, sent: 2},
	}
	for _, c := range queueDroppingChanges {
		tests = append(tests, struct {
			name   string
			change func(g *pacedRig)
			sent   int
		}{name: c.name, change: c.change})
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := newPacedRig(t, 20*time.Millisecond)
			tc, now := g.r.tc, time.Now()
			g.sourceAt(100, 5000, 3, now)
			last := g.expectRun("the source packet", 1, 160, nil)
			c.change(g)
			g.d.wake(tc, now.Add(40*time.Millisecond)) // both due
			g.expectRun("the wake-up", c.sent, 160, last)
			if tc.pacing() || tc.packets.pending() {
				t.Fatalf("paced %v, pending %v: still queued", tc.pacing(), tc.packets.pending())
			}
		})
	}
}
