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

// DLSR holds 32 bits of 1/65536 s, some 18 hours (RFC 3550 §6.4.1). An
// endpoint whose last SR is older than that is reported as one that sent
// none, LSR and DLSR 0, never with a DLSR that wrapped round to a short
// delay and gives it a wrong round trip.
func TestStaleSRPastWhatDLSRHoldsIsReportedAsNone(t *testing.T) {
	tests := []struct {
		name      string
		age       time.Duration
		wantLSR   uint32
		wantDelay uint32
	}{
		{name: "an hour", age: time.Hour, wantLSR: 0x12345678, wantDelay: 3600 << 16},
		{name: "just under 18.2 hours", age: 65535 * time.Second, wantLSR: 0x12345678, wantDelay: 65535 << 16},
		{name: "just past what DLSR holds", age: 65536 * time.Second, wantLSR: 0, wantDelay: 0},
		{name: "19 hours", age: 19 * time.Hour, wantLSR: 0, wantDelay: 0},
		// Past the point where the delay in nanoseconds times 65536
		// overflows 64 bits.
		{name: "two days", age: 48 * time.Hour, wantLSR: 0, wantDelay: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := &leg{}
			rx := quality.NewReceiver(8000)
			now := time.Now()
			for i := range 5 {
				rx.Update(uint16(i), uint32(i*160), now)
			}
			l.rx.Store(rx)
			l.remoteSSRC.Store(uint64(heard(42)))
			at := stampOf(now)
			l.lastSR.store(42, 0x12345678, at)
			blocks := l.receptionReports(at + tc.age)
			if len(blocks) != 1 || blocks[0].LastSenderReport != tc.wantLSR || blocks[0].Delay != tc.wantDelay {
				t.Fatalf("blocks %+v, want LSR %#x DLSR %d", blocks, tc.wantLSR, tc.wantDelay)
			}
		})
	}
}
