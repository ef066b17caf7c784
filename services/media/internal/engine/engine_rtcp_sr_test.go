package engine

import (
	"testing"
	"time"

	"github.com/pion/rtcp"

	"callgrid.dev/services/media/internal/quality"
)

// A sender report that arrives while a report block is being built (the
// reader and the report builder run on different goroutines) leaves the
// block's LSR and DLSR about one and the same SR: a new SR's LSR paired
// with the old one's arrival would make DLSR seconds too long, and the
// endpoint's round-trip time with it. The new SR comes in at the worst
// moment, between the builder's reads, by a hook rather than by chance.
func TestReportBlockPairsAnSRWithItsOwnArrival(t *testing.T) {
	fx := newRTCPFixture(t, ServiceTone)
	a := fx.s.legs[0]
	rx := quality.NewReceiver(8000)
	now := time.Now()
	for i := range 5 {
		rx.Update(uint16(i), uint32(i*160), now)
	}
	a.rx.Store(rx)
	a.remoteSSRC.Store(uint64(heard(42)))
	sr := func(middle uint32) []byte {
		t.Helper()
		pkt, err := rtcp.Marshal([]rtcp.Packet{&rtcp.SenderReport{SSRC: 42, NTPTime: uint64(middle) << 16, RTPTime: 800, PacketCount: 5, OctetCount: 800}})
		if err != nil {
			t.Fatal(err)
		}
		return pkt
	}
	// The report is made 5 s on, the SRs 3 s and half a second before it:
	// activity stamps start with the process, so none is before it.
	report := now.Add(5 * time.Second)
	port := rtcpPort{s: fx.s, l: a}
	port.HandleDatagram(sr(0x1111_1111), fx.srcRTCP, report.Add(-3*time.Second))
	newer := false
	a.lastSR.afterRead = func() {
		if !newer {
			newer = true
			port.HandleDatagram(sr(0x2222_2222), fx.srcRTCP, report.Add(-time.Second/2))
		}
	}
	blocks := a.receptionReports(stampOf(report))
	if !newer {
		t.Fatal("the hook did not run: the test no longer tests the interleaving")
	}
	if len(blocks) != 1 {
		t.Fatalf("%d blocks, want one", len(blocks))
	}
	b := blocks[0]
	want := map[uint32]uint32{0x1111_1111: 3 * 65536, 0x2222_2222: 65536 / 2}
	if d, ok := want[b.LastSenderReport]; !ok || b.Delay != d {
		t.Fatalf("LSR %#x with DLSR %d (%.3f s): not an SR with its own arrival, want %#x with %d or %#x with %d",
			b.LastSenderReport, b.Delay, float64(b.Delay)/65536, uint32(0x1111_1111), want[0x1111_1111], uint32(0x2222_2222), want[0x2222_2222])
	}
}
