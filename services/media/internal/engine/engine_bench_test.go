package engine

import (
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/portpool"
	"callgrid.dev/services/media/internal/sdpneg"
	"callgrid.dev/services/media/internal/udpio"
)

// rig is a direction outside any session, for driving the packet path
// directly: from a fake source to a sink socket nobody reads.
type rig struct {
	d    *direction
	r    *route
	src  netip.AddrPort
	sink *net.UDPConn
}

func newRig(tb testing.TB, from, to codec.Info) *rig {
	tb.Helper()
	pool, err := portpool.New("127.0.0.1", testPortMin+100, testPortMax)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := newMetrics(prometheus.NewRegistry(), pool, 1)
	if err != nil {
		tb.Fatal(err)
	}
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	legs := [2]*leg{}
	for i := range legs {
		pair, err := pool.Allocate()
		if err != nil {
			tb.Fatal(err)
		}
		legs[i] = newLeg(Leg(i+1), pair, netip.MustParseAddr("127.0.0.1"), false, 0, &m.drops)
	}
	legs[0].peer.Store(&peer{rtp: src, direction: sdpneg.SendRecv})
	legs[1].peer.Store(&peer{rtp: sink.LocalAddr().(*net.UDPAddr).AddrPort(), direction: sdpneg.SendRecv})
	legs[0].metrics.Store(m.forCodec(string(from.Name), 0))
	legs[1].metrics.Store(m.forCodec(string(to.Name), 0))

	r := &route{mode: routePassthrough, audioPT: 0, eventPT: 96, inClock: from.ClockRate, outClock: to.ClockRate,
		inEventClock: 8000, outEventClock: to.ClockRate}
	r.kinds[0], r.kinds[101] = ptAudio, ptEvent
	var tc *transcoder
	if from.Name != to.Name {
		tc, err = newTranscoder(from, to, codec.DefaultOpusOptions())
		if err != nil {
			tb.Fatal(err)
		}
		r.mode, r.tc, r.audioPT = routeTranscode, tc, 111
	}
	d := newDirection(legs[0], legs[1], true)
	d.route.Store(r)
	// The timer is set and reset as in a session, and what it posts is
	// dropped: the loop does not read the socket, whose handler the test
	// calls itself.
	loop, err := udpio.NewLoop(nil)
	if err != nil {
		tb.Fatal(err)
	}
	if tc != nil {
		tc.setTimerOn(loop, legs[0].pair.RTP, d, defaultTalkspurtGrace)
	}
	tb.Cleanup(func() {
		if tc != nil {
			tc.close()
		}
		loop.Close()
		for _, l := range legs {
			l.pair.Release()
		}
		sink.Close()
	})
	return &rig{d: d, r: r, src: src, sink: sink}
}

func pcmu() codec.Info { i, _ := codec.Lookup("PCMU"); return i }
func opus() codec.Info { i, _ := codec.Lookup("opus"); return i }

// BenchmarkPassthroughRewrite is the per-packet relay work without the
// socket calls: parse, remap, rewrite in place.
func BenchmarkPassthroughRewrite(b *testing.B) {
	g := newRig(b, pcmu(), pcmu())
	template, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SSRC: 9}, Payload: make([]byte, 160)}).Marshal()
	pkt := make([]byte, len(template))
	now := time.Now()
	g.d.adopt(g.r)
	b.ReportAllocs()
	seq := uint16(0)
	for b.Loop() {
		copy(pkt, template)
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		payload, ok := g.d.parse(pkt)
		if !ok {
			b.Fatal("parse failed")
		}
		g.d.rewrite(g.r, pkt, payload, ptAudio, now)
	}
}

// BenchmarkPassthroughPacket is the reader's whole per-packet path,
// including the send syscall: source check, parse, counters, quality,
// rewrite, write.
func BenchmarkPassthroughPacket(b *testing.B) {
	g := newRig(b, pcmu(), pcmu())
	template, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SSRC: 9}, Payload: make([]byte, 160)}).Marshal()
	pkt := make([]byte, len(template))
	b.ReportAllocs()
	seq := uint16(0)
	for b.Loop() {
		copy(pkt, template)
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		now := time.Now()
		g.d.handleRTP(pkt, g.src, now, 0)
	}
}

// BenchmarkTranscodeFrame is one 20 ms PCMU frame in, one Opus frame out,
// including the send.
func BenchmarkTranscodeFrame(b *testing.B) {
	g := newRig(b, pcmu(), opus())
	frames := encodeTone(b, codec.PCMU, 8000, 50)
	pkt := make([]byte, rtpHeaderLen+160)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		raw, _ := (&rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 9}).MarshalTo(pkt)
		copy(pkt[raw:], frames[i%len(frames)])
		g.d.handleRTP(pkt, g.src, time.Now(), 0)
		i++
	}
}

// FuzzHandleRTP feeds arbitrary datagrams through a transcoding and a
// relaying direction: nothing may panic, and the state stays usable.
func FuzzHandleRTP(f *testing.F) {
	good, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: 1, SSRC: 9}, Payload: make([]byte, 160)}).Marshal()
	event, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 101, SequenceNumber: 2, SSRC: 9}, Payload: []byte{1, 0x80, 0, 160}}).Marshal()
	padded, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, Padding: true, PayloadType: 0, SequenceNumber: 3, SSRC: 9}, Payload: []byte{1, 2}, PaddingSize: 4}).Marshal()
	ext := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: 4, SSRC: 9}, Payload: []byte{1}}
	_ = ext.SetExtension(1, []byte{0xaa})
	extended, _ := ext.Marshal()
	for _, seed := range [][]byte{good, event, padded, extended, {0x80}, {0x80, 0xc8, 0, 1, 0, 0, 0, 0}, {}} {
		f.Add(seed)
	}
	relay := newRig(f, pcmu(), pcmu())
	transcode := newRig(f, pcmu(), opus())
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, g := range []*rig{relay, transcode} {
			pkt := append([]byte(nil), data...)
			g.d.handleRTP(pkt, g.src, time.Now(), 0)
			_ = validRTCP(pkt)
			_ = looksLikeRTCP(pkt)
		}
	})
}

// The packet path's objects are laid out by cache line (see direction and
// leg): they must stay sizes whose allocations start on a line.
func TestHotStructsStartOnCacheLines(t *testing.T) {
	for name, size := range map[string]uintptr{"direction": unsafe.Sizeof(direction{}), "leg": unsafe.Sizeof(leg{})} {
		if size%64 != 0 {
			t.Errorf("%s is %d bytes, not a whole number of cache lines", name, size)
		}
	}
}
