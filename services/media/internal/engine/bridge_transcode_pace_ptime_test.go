package engine

import (
	"testing"
	"time"
)

// A re-INVITE that moves the destination from 10 to 20 ms packets, taken
// up while a paced 10 ms packet waits (by the timer's wake-up, or by the
// next source packet), must not strand that whole packet: it is due, and
// the 20 ms packets after it should each be one frame, not straddle two.
func TestPacketTimeChangeWhilePacedStrandsNothing(t *testing.T) {
	tests := []struct {
		name string
		// takeUp has the new route taken up while the paced packet
		// waits; it returns how many packets that sent, and the next
		// source packet.
		takeUp func(g *pacedRig, now time.Time) (int, int)
	}{
		{name: "by the wake-up", takeUp: func(g *pacedRig, now time.Time) (int, int) {
			g.d.wake(g.r.tc, now.Add(10*time.Millisecond))
			return len(g.sent()), 1
		}},
		{name: "by an early source packet", takeUp: func(g *pacedRig, now time.Time) (int, int) {
			g.source(1, 7, 1, now.Add(5*time.Millisecond))
			return len(g.sent()), 2
		}},
	}
	for _, c := range tests {
		t.Run(c.name, func(t *testing.T) {
			g := newPacedRig(t, 10*time.Millisecond)
			tc, now := g.r.tc, time.Now()
			g.source(0, 7, 1, now)
			g.expect("the source packet", 1, nil)
			r := *g.r
			r.packetTime = 20 * time.Millisecond
			g.d.route.Store(&r)
			n, next := c.takeUp(g, now)
			if n == 0 {
				t.Errorf("the paced 10 ms packet, due, was not sent when the new route was taken up")
			}
			// Steady 20 ms source packets from here on.
			for i := next; i < 6; i++ {
				g.source(i, 7, 1, now.Add(time.Duration(i)*frameDuration))
				g.sent()
				if tc.packets.pending() || tc.timerSet {
					t.Fatalf("after source packet %d at 20 ms: %d octets held back, timer set %v: every 20 ms packet straddles two frames, 10 ms late, and resets the tail timer",
						i, tc.packets.queued, tc.timerSet)
				}
			}
		})
	}
}
