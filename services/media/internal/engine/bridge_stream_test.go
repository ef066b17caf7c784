package engine

import (
	"testing"
	"time"
)

// A stream resumed (a new source, a new codec's transcoder, a new tone
// run) continues right after the last packet sent: its timestamp plus the
// time since, but no sooner than that packet's end, whatever its length.
// After a 10 ms packet a resumed stream starting 20 ms on left a 10 ms
// hole the receiver played as a gap. Only a relayed packet, whose length
// the node does not know, is taken to last the usual 20 ms.
func TestResumedStreamFollowsTheLastPacket(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		last func(o *outStream) // what was sent last, at now
		at   time.Duration      // when the stream resumes, after now
		want uint32             // ticks at 8 kHz after the stream's last timestamp
	}{
		{name: "10 ms packet, at once", last: func(o *outStream) { o.next(1000, now, 10*time.Millisecond) }, want: 80},
		{name: "10 ms packet, 5 ms on", last: func(o *outStream) { o.next(1000, now, 10*time.Millisecond) }, at: 5 * time.Millisecond, want: 80},
		{name: "20 ms packet", last: func(o *outStream) { o.next(1000, now, 20*time.Millisecond) }, want: 160},
		{name: "60 ms packet", last: func(o *outStream) { o.next(1000, now, 60*time.Millisecond) }, at: 20 * time.Millisecond, want: 480},
		{name: "10 ms packet, 30 ms on", last: func(o *outStream) { o.next(1000, now, 10*time.Millisecond) }, at: 30 * time.Millisecond, want: 240},
		{name: "event, covered to its end", last: func(o *outStream) {
			seq := o.next(1000-400, now, 0)
			o.coverEvent(seq, 1000)
		}, at: 10 * time.Millisecond, want: 80},
		{name: "relayed packet", last: func(o *outStream) { o.relay(7, 1, 1000, 8000, now) }, want: 160},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			o := newOutStream(false)
			c.last(&o)
			if got := o.resumeTS(8000, now.Add(c.at)) - o.ts; got != c.want {
				t.Fatalf("resumed %d ticks after the last timestamp, want %d", got, c.want)
			}
		})
	}
}

// A new source after transcoded 10 ms packets begins its stream right
// after the last of them, seamless: timestamps 80 apart throughout.
func TestNewSourceAfterTenMillisecondPacketsIsSeamless(t *testing.T) {
	g := newPacedRig(t, 10*time.Millisecond)
	now := time.Now()
	g.source(0, 7, 1, now)
	first := g.expect("the first source packet", 1, nil)
	g.d.wake(g.r.tc, now.Add(10*time.Millisecond))
	paced := g.expect("the paced packet", 1, first)
	g.source(1, 9, 1, now.Add(20*time.Millisecond))
	got := g.sent()
	if len(got) != 1 {
		t.Fatalf("the new source: %d packets, want one", len(got))
	}
	if next := got[0]; !next.Marker || next.SequenceNumber != paced.SequenceNumber+1 || next.Timestamp != paced.Timestamp+80 {
		t.Fatalf("the new source's first packet %+v after %+v, want it marked, 80 ticks on", next.Header, paced.Header)
	}
}
