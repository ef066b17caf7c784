package engine

import (
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/portpool"
	"callgrid.dev/services/media/internal/sdpneg"
)

// toneSession is a tone session's leg A, sending to endpoint a, playing a
// tone in codecName in packets of every; it has no event loop and no
// clock.
func toneSession(t *testing.T, a *endpoint, codecName string, every time.Duration) *session {
	t.Helper()
	pool, err := portpool.New("127.0.0.1", testPortMin+100, testPortMax)
	if err != nil {
		t.Fatal(err)
	}
	m, err := newMetrics(prometheus.NewRegistry(), pool, 1)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := pool.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pair.Release)
	s := &session{e: &Engine{metrics: m, rtcpEvery: time.Hour}, service: ServiceTone, done: make(chan struct{})}
	s.legs[0] = newLeg(LegA, pair, netip.MustParseAddr("127.0.0.1"), false, 0, &m.drops)
	s.legs[0].peer.Store(&peer{rtp: a.addr(), direction: sdpneg.SendRecv})
	info, _ := codec.Lookup(codecName)
	src, err := newToneSource(info, 0, every, codec.DefaultOpusOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.close)
	s.tone.Store(src)
	return s
}

// The tone in 10 ms packets (a caller's a=ptime:10) goes out as the
// caller's own endpoint would send it: each packet at its own time, 10 ms
// after the one before, not two at once on a 20 ms clock, which a
// receiver sizing its jitter buffer by arrival takes for 10 ms of jitter.
// The session clock, which drives the tone, runs here on synctest's
// clock, so that the time of every send is exact: only the packets due
// by each moment are sent by then.
func TestTenMillisecondToneIsSentAPacketAtATime(t *testing.T) {
	a := newEndpoint(t)
	synctest.Test(t, func(t *testing.T) {
		s := toneSession(t, a, "PCMU", 10*time.Millisecond)
		l := s.legs[0]
		s.wg.Add(1)
		go s.clock()
		t.Cleanup(func() {
			close(s.done)
			s.wg.Wait()
		})
		// Half-way between one packet's time and the next's, the
		// packets of every 10 ms so far are out, the first at once.
		time.Sleep(5 * time.Millisecond)
		for i := range 20 {
			synctest.Wait()
			if got, want := l.packetsOut.Load(), uint64(i+1); got != want {
				t.Fatalf("%v in: %d packets sent, want %d", time.Duration(i)*10*time.Millisecond+5*time.Millisecond, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// Playing the tone allocates nothing a packet, 10 ms ones included.
func TestTonePacketAllocatesNothing(t *testing.T) {
	s := toneSession(t, newEndpoint(t), "PCMU", 10*time.Millisecond)
	p := newTonePlayer()
	clock := newToneClock(p)
	defer clock.stop()
	now := time.Now()
	clock.tick(s, now)
	allocs := testing.AllocsPerRun(100, func() {
		now = now.Add(10 * time.Millisecond)
		before := p.sent
		clock.tick(s, now)
		if p.sent != before+1 {
			t.Fatalf("a tick sent %d packets, want 1", p.sent-before)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations a packet, want none", allocs)
	}
}
