package engine

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/portpool"
	"callgrid.dev/services/media/internal/quality"
	"callgrid.dev/services/media/internal/sdpneg"
)

// readCompound waits for the next compound RTCP packet on the endpoint's
// RTCP socket, checks it is one (RFC 3550 §6.1: SR or RR first, SDES with
// a CNAME) and returns it with its arrival time.
func (ep *endpoint) readCompound(timeout time.Duration) ([]rtcp.Packet, time.Time) {
	ep.t.Helper()
	pkts, at, ok := ep.tryCompound(timeout)
	if !ok {
		ep.t.Fatal("no rtcp from the node")
	}
	return pkts, at
}

// tryCompound is readCompound that reports a timeout instead of failing.
func (ep *endpoint) tryCompound(timeout time.Duration) ([]rtcp.Packet, time.Time, bool) {
	ep.t.Helper()
	buf := make([]byte, 1500)
	_ = ep.rtcp.SetReadDeadline(time.Now().Add(timeout))
	n, err := ep.rtcp.Read(buf)
	if err != nil {
		return nil, time.Time{}, false
	}
	at := time.Now()
	pkts, err := rtcp.Unmarshal(buf[:n])
	if err != nil {
		ep.t.Fatalf("malformed rtcp from node: %v", err)
	}
	switch pkts[0].(type) {
	case *rtcp.SenderReport, *rtcp.ReceiverReport:
	default:
		ep.t.Fatalf("compound report starts with %T", pkts[0])
	}
	cname := false
	for _, p := range pkts {
		if sdes, ok := p.(*rtcp.SourceDescription); ok {
			for _, c := range sdes.Chunks {
				for _, it := range c.Items {
					cname = cname || (it.Type == rtcp.SDESCNAME && it.Text != "")
				}
			}
		}
	}
	if !cname {
		ep.t.Fatal("compound report without an SDES CNAME")
	}
	return pkts, at, true
}

// reportBlocks are the report blocks of a compound packet's SR or RR.
func reportBlocks(pkts []rtcp.Packet) []rtcp.ReceptionReport {
	switch r := pkts[0].(type) {
	case *rtcp.SenderReport:
		return r.Reports
	case *rtcp.ReceiverReport:
		return r.Reports
	}
	return nil
}

// recvReport waits for a report from the node that has a report block.
func (ep *endpoint) recvReport(timeout time.Duration) rtcp.ReceptionReport {
	ep.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pkts, _ := ep.readCompound(time.Until(deadline))
		if blocks := reportBlocks(pkts); len(blocks) > 0 {
			return blocks[0]
		}
	}
}

func TestReceiverReportsWhenTerminating(t *testing.T) {
	tests := []struct {
		name    string
		service Service
		answer  []string // B's answer formats and attributes; empty for a service
		ssrc    uint32   // A's
	}{
		{name: "echo", service: ServiceEcho, ssrc: 42},
		{name: "tone", service: ServiceTone, ssrc: 42},
		{name: "transcoding bridge", answer: []string{"111", "a=rtpmap:111 opus/48000/2"}, ssrc: 42},
		// 0 is an SSRC like any other (RFC 3550 §5.1).
		{name: "echo of SSRC 0", service: ServiceEcho, ssrc: 0},
		{name: "transcoding bridge from SSRC 0", answer: []string{"111", "a=rtpmap:111 opus/48000/2"}, ssrc: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t, nil)
			e.rtcpEvery = 50 * time.Millisecond
			a, b := newEndpoint(t), newEndpoint(t)
			ctx := context.Background()
			reply, err := e.Offer(ctx, OfferParams{SessionID: "s1", SDP: a.sdp("0"), Service: tc.service})
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.answer) > 0 {
				if reply, _, err = e.Answer(ctx, "s1", b.sdp(tc.answer[0], tc.answer[1:]...), false); err != nil {
					t.Fatal(err)
				}
			}
			d, _ := sdpneg.Parse(reply)
			for i := range 20 {
				if i == 10 {
					continue // one lost packet, to see it reported
				}
				a.send(d.Audio().RTP(), rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: tc.ssrc}, pcmuPayload(0xff))
			}
			// Reports are periodic: wait for one that covers every packet.
			deadline := time.Now().Add(2 * time.Second)
			block := a.recvReport(2 * time.Second)
			for block.LastSequenceNumber < 19 && time.Now().Before(deadline) {
				block = a.recvReport(time.Until(deadline))
			}
			if block.SSRC != tc.ssrc || block.LastSequenceNumber != 19 || block.TotalLost != 1 {
				t.Fatalf("report block = %+v", block)
			}
		})
	}
}

// Relayed RTCP follows the relay's numbering once it is no longer the
// source's own (here A changed SSRC and sequence mid-call): B gets A's
// sender reports under the SSRC and timeline it receives A's audio on, and
// A gets B's reports about that audio under A's own SSRC and sequence.
func TestRelayedRTCPFollowsTheRelayedNumbering(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, nodeB, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	var last rtp.Packet
	for i := range 10 {
		ssrc, seq, ts := uint32(0x1111), uint16(100+i), uint32(i*160)
		if i >= 5 {
			ssrc, seq, ts = 0x2222, uint16(7000+i), uint32(900000+i*160)
		}
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, pcmuPayload(1))
		p, ok := b.recv(2 * time.Second)
		if !ok {
			t.Fatalf("packet %d not relayed", i)
		}
		last = p
	}
	rtcpAt := func(node netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(node.Addr(), node.Port()+1) }
	readRTCP := func(ep *endpoint) []rtcp.Packet {
		t.Helper()
		buf := make([]byte, 1500)
		_ = ep.rtcp.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := ep.rtcp.Read(buf)
		if err != nil {
			t.Fatalf("no rtcp relayed: %v", err)
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			t.Fatalf("relayed rtcp malformed: %v", err)
		}
		return pkts
	}

	// A's sender report on its new stream: the RTP time of its last packet.
	sr, _ := rtcp.Marshal([]rtcp.Packet{
		&rtcp.SenderReport{SSRC: 0x2222, NTPTime: 1 << 40, RTPTime: 900000 + 9*160, PacketCount: 5, OctetCount: 800},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 0x2222, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "a"}}}}},
	})
	if _, err := a.rtcp.WriteToUDPAddrPort(sr, rtcpAt(nodeA)); err != nil {
		t.Fatal(err)
	}
	pkts := readRTCP(b)
	got, ok := pkts[0].(*rtcp.SenderReport)
	if !ok || got.SSRC != last.SSRC || got.RTPTime != last.Timestamp {
		t.Fatalf("B got %+v, want the SR from SSRC %#x at RTP time %d", pkts[0], last.SSRC, last.Timestamp)
	}
	if sdes := pkts[1].(*rtcp.SourceDescription); sdes.Chunks[0].Source != last.SSRC {
		t.Fatalf("SDES chunk from %#x, want %#x", sdes.Chunks[0].Source, last.SSRC)
	}

	// B's receiver report on what it got, in the numbering it got it in.
	rr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 0x3333, Reports: []rtcp.ReceptionReport{{
		SSRC: last.SSRC, LastSequenceNumber: 1<<16 | uint32(last.SequenceNumber),
	}}}})
	if _, err := b.rtcp.WriteToUDPAddrPort(rr, rtcpAt(nodeB)); err != nil {
		t.Fatal(err)
	}
	report, ok := readRTCP(a)[0].(*rtcp.ReceiverReport)
	if !ok || len(report.Reports) != 1 {
		t.Fatalf("A got %+v", report)
	}
	if block := report.Reports[0]; block.SSRC != 0x2222 || uint16(block.LastSequenceNumber) != 7009 {
		t.Fatalf("A's report block: SSRC %#x, highest sequence %d; want 0x2222 and 7009", block.SSRC, uint16(block.LastSequenceNumber))
	}
}

// FuzzTranslateRTCP: any compound packet whose framing passes validRTCP
// is translated without a panic or a read outside it.
func FuzzTranslateRTCP(f *testing.F) {
	sr, _ := rtcp.Marshal([]rtcp.Packet{
		&rtcp.SenderReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: 4}}},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 1, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "x"}}}}},
		&rtcp.Goodbye{Sources: []uint32{1}},
		&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 4},
	})
	f.Add(sr)
	f.Add([]byte{0x81, 202, 0, 1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if !validRTCP(pkt) {
			return
		}
		own := outStream{started: true, ssrc: 2, inSSRC: 1, seqDelta: 7, tsDelta: 9, report: newStreamReport(2)}
		received := outStream{started: true, ssrc: 4, inSSRC: 3, seqDelta: 5, report: newStreamReport(4)}
		translateRTCP(pkt, &own, &received, &leg{})
	})
}

// arrival is an RTP packet an endpoint received, and when.
type arrival struct {
	at   time.Time
	pt   uint8
	ts   uint32
	ssrc uint32
}

// collectRTP reads the endpoint's RTP socket in the background until the
// test ends; the function returned gives what arrived so far.
func collectRTP(t *testing.T, ep *endpoint) func() []arrival {
	var (
		mu   sync.Mutex
		got  []arrival
		done = make(chan struct{})
		end  = make(chan struct{})
	)
	go func() {
		defer close(end)
		buf := make([]byte, 1500)
		for {
			select {
			case <-done:
				return
			default:
			}
			_ = ep.rtp.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := ep.rtp.Read(buf)
			if err != nil {
				continue
			}
			at := time.Now()
			var h rtp.Header
			if _, err := h.Unmarshal(buf[:n]); err == nil {
				mu.Lock()
				got = append(got, arrival{at: at, pt: h.PayloadType, ts: h.Timestamp, ssrc: h.SSRC})
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { close(done); <-end })
	return func() []arrival {
		mu.Lock()
		defer mu.Unlock()
		return append([]arrival(nil), got...)
	}
}

// recvSR waits for a sender report that arrives after since.
func (ep *endpoint) recvSR(since time.Time, timeout time.Duration) (*rtcp.SenderReport, time.Time) {
	ep.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pkts, at, ok := ep.tryCompound(time.Until(deadline))
		if !ok {
			break
		}
		if sr, ok := pkts[0].(*rtcp.SenderReport); ok && at.After(since) {
			return sr, at
		}
	}
	ep.t.Fatal("no sender report from a node sending RTP")
	return nil, time.Time{}
}

// A node that sends a stream (here the tone) reports on it with sender
// reports (RFC 3550 §6.4.1): its SSRC, the packets and payload octets it
// sent, and an RTP timestamp that is the stream's at the SR's NTP time, on
// the clock of the codec in use, before and after a re-INVITE changes it.
func TestSenderReportsDescribeTheStreamSent(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	e.rtcpEvery = 80 * time.Millisecond
	a := newEndpoint(t)
	ctx := context.Background()
	if _, err := e.Offer(ctx, OfferParams{SessionID: "tone", SDP: a.sdp("0"), Service: ServiceTone}); err != nil {
		t.Fatal(err)
	}
	arrivals := collectRTP(t, a)
	ntpSeconds := func(ntp uint64) float64 { return float64(ntp) / (1 << 32) }
	// The node's clock is this test's: the SR's NTP time says when it was
	// made, however late the test reads it.
	ntpWall := func(ntp uint64) time.Time {
		return time.Unix(int64(ntp>>32)-2208988800, int64((ntp&0xffffffff)*uint64(time.Second)>>32))
	}

	check := func(name string, pt uint8, clock int) {
		t.Helper()
		since := time.Now()
		first, firstAt := a.recvSR(since, 2*time.Second)
		second, _ := a.recvSR(firstAt, 2*time.Second)
		for _, sr := range []*rtcp.SenderReport{first, second} {
			made := ntpWall(sr.NTPTime)
			var last arrival
			for _, p := range arrivals() {
				if p.pt == pt && !p.at.After(made) {
					last = p
				}
			}
			if last.at.IsZero() {
				t.Fatalf("%s: no tone packet before the SR", name)
			}
			if sr.SSRC != last.ssrc {
				t.Fatalf("%s: SR from SSRC %#x, the tone is %#x", name, sr.SSRC, last.ssrc)
			}
			// What the stream's timestamp is at the SR's NTP time: the
			// last packet's, moved on by the time since it arrived.
			want := last.ts + uint32(made.Sub(last.at).Seconds()*float64(clock))
			if off := int32(sr.RTPTime - want); off > int32(clock/50) || off < -int32(clock/50) {
				t.Fatalf("%s: SR RTP time %d is %d ticks from the stream's %d", name, sr.RTPTime, off, want)
			}
		}
		elapsed := ntpSeconds(second.NTPTime) - ntpSeconds(first.NTPTime)
		ticks := float64(int32(second.RTPTime - first.RTPTime))
		if elapsed <= 0 || ticks/elapsed < float64(clock)*0.9 || ticks/elapsed > float64(clock)*1.1 {
			t.Fatalf("%s: SRs %.3f s apart advance %v ticks: a %v Hz clock, want %d", name, elapsed, ticks, ticks/elapsed, clock)
		}
		sent, made := 0, ntpWall(second.NTPTime)
		for _, p := range arrivals() {
			if !p.at.After(made) {
				sent++
			}
		}
		if int(second.PacketCount) > sent+3 || int(second.PacketCount) < sent-3 {
			t.Fatalf("%s: SR counts %d packets, %d had arrived by then", name, second.PacketCount, sent)
		}
	}

	check("PCMU", 0, 8000)
	if sr, _ := a.recvSR(time.Time{}, 2*time.Second); sr.OctetCount != sr.PacketCount*160 {
		t.Fatalf("SR counts %d octets in %d PCMU packets, want 160 each", sr.OctetCount, sr.PacketCount)
	}
	if _, _, err := e.Update(ctx, "tone", LegA, a.sdp("111", "a=rtpmap:111 opus/48000/2"), false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	check("Opus after a re-INVITE", 111, 48000)
}

// Reports are not sent on a fixed beat (RFC 3550 §6.2, §6.3.1): each wait
// is drawn between half and one and a half times the interval, so sessions
// set up together do not report in lockstep.
func TestReportIntervalIsRandomised(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	const every = 40 * time.Millisecond
	e.rtcpEvery = every
	a := newEndpoint(t)
	if _, err := e.Offer(context.Background(), OfferParams{SessionID: "echo", SDP: a.sdp("0"), Service: ServiceEcho}); err != nil {
		t.Fatal(err)
	}
	// Eleven waits drawn from 20-60 ms all fall within 16 ms of each other
	// once in 1,400 runs; twenty-three, once in forty million.
	var times []time.Time
	for range 24 {
		_, at := a.readCompound(time.Second)
		times = append(times, at)
	}
	shortest, longest := time.Hour, time.Duration(0)
	for i := 1; i < len(times); i++ {
		d := times[i].Sub(times[i-1])
		shortest, longest = min(shortest, d), max(longest, d)
	}
	t.Logf("intervals from %v to %v", shortest, longest)
	if longest-shortest < every*2/5 {
		t.Fatalf("reports %v to %v apart: a fixed interval", shortest, longest)
	}
}

// A session that ends says so to each endpoint it sent media or reports
// (RFC 3550 §6.3.7): a compound RR/SR, SDES, BYE for the node's SSRC. One
// that never sent anything sends no BYE.
func TestByeWhenTheSessionEnds(t *testing.T) {
	t.Run("tone", func(t *testing.T) {
		e, _ := newTestEngine(t, nil)
		a := newEndpoint(t)
		if _, err := e.Offer(context.Background(), OfferParams{SessionID: "tone", SDP: a.sdp("0"), Service: ServiceTone}); err != nil {
			t.Fatal(err)
		}
		p, ok := a.recv(2 * time.Second)
		if !ok {
			t.Fatal("no tone")
		}
		if _, err := e.Delete("tone"); err != nil {
			t.Fatal(err)
		}
		pkts, _, ok := a.tryCompound(time.Second)
		if !ok {
			t.Fatal("no RTCP when the session ended")
		}
		bye, ok := pkts[len(pkts)-1].(*rtcp.Goodbye)
		if !ok || len(bye.Sources) != 1 || bye.Sources[0] != p.SSRC {
			t.Fatalf("at the end got %+v, want a BYE from the tone's SSRC %#x", pkts, p.SSRC)
		}
		if sr, ok := pkts[0].(*rtcp.SenderReport); !ok || sr.SSRC != p.SSRC {
			t.Fatalf("BYE compound starts with %+v, want the tone's SR", pkts[0])
		}
	})
	t.Run("echo that sent nothing", func(t *testing.T) {
		e, _ := newTestEngine(t, nil)
		a := newEndpoint(t)
		if _, err := e.Offer(context.Background(), OfferParams{SessionID: "echo", SDP: a.sdp("0"), Service: ServiceEcho}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Delete("echo"); err != nil {
			t.Fatal(err)
		}
		_ = a.rtcp.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := a.rtcp.Read(make([]byte, 1500)); err == nil {
			t.Fatalf("a session that never sent anything sent %d bytes of RTCP", n)
		}
	})
}

// LSR and DLSR in a report block are about the last SR of that block's
// source (RFC 3550 §6.4.1): once the endpoint replaces its stream, the new
// source has sent no SR and its block says so, rather than pairing it
// with the old source's.
func TestReportBlockLSRIsFromItsOwnSource(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	e.rtcpEvery = 50 * time.Millisecond
	a := newEndpoint(t)
	reply, err := e.Offer(context.Background(), OfferParams{SessionID: "tone", SDP: a.sdp("0"), Service: ServiceTone})
	if err != nil {
		t.Fatal(err)
	}
	node := nodeAddr(t, reply)
	nodeRTCP := netip.AddrPortFrom(node.Addr(), node.Port()+1)
	blockFor := func(ssrc uint32) rtcp.ReceptionReport {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if b := a.recvReport(time.Until(deadline)); b.SSRC == ssrc {
				return b
			}
		}
		t.Fatalf("no report block about SSRC %#x", ssrc)
		return rtcp.ReceptionReport{}
	}
	for i := range 5 {
		a.send(node, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 42}, pcmuPayload(0xff))
	}
	sr, _ := rtcp.Marshal([]rtcp.Packet{
		&rtcp.SenderReport{SSRC: 42, NTPTime: 0x0000_1234_5678_0000, RTPTime: 800, PacketCount: 5, OctetCount: 800},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 42, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "a"}}}}},
	})
	if _, err := a.rtcp.WriteToUDPAddrPort(sr, nodeRTCP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	block := blockFor(42)
	for block.LastSenderReport == 0 && time.Now().Before(deadline) {
		block = blockFor(42)
	}
	if block.LastSenderReport != 0x1234_5678 || block.Delay > 65536 {
		t.Fatalf("block about the source that sent the SR: LSR %#x DLSR %d, want 0x12345678 and under a second", block.LastSenderReport, block.Delay)
	}

	for i := range 5 {
		a.send(node, rtp.Header{PayloadType: 0, SequenceNumber: uint16(1000 + i), Timestamp: uint32(90000 + i*160), SSRC: 43}, pcmuPayload(0xff))
	}
	if block := blockFor(43); block.LastSenderReport != 0 || block.Delay != 0 {
		t.Fatalf("block about a source that sent no SR: LSR %#x DLSR %d, want 0", block.LastSenderReport, block.Delay)
	}
}

// DLSR is the time from the SR's arrival to the report: an SR taken in
// after the report's time was read is no delay, not one of 18 hours.
func TestDelaySinceLastSRIsNeverNegative(t *testing.T) {
	l := &leg{}
	rx := quality.NewReceiver(8000)
	now := time.Now()
	for i := range 5 {
		rx.Update(uint16(i), uint32(i*160), now)
	}
	l.rx.Store(rx)
	l.remoteSSRC.Store(uint64(heard(42)))
	at := stampOf(now)
	l.lastSR.store(42, 0x12345678, at+time.Millisecond)
	blocks := l.receptionReports(at)
	if len(blocks) != 1 || blocks[0].LastSenderReport != 0x12345678 || blocks[0].Delay != 0 {
		t.Fatalf("blocks %+v, want LSR 0x12345678 with no delay", blocks)
	}
}

// An SR is remembered whatever its sender SSRC and NTP time: one from SSRC
// 0 whose NTP middle bits are 0 (a clock 65536 s past an era, or an
// endpoint that sends no wall clock) still gives its block a DLSR, its LSR
// being those bits, 0.
func TestSRFromSSRCZeroWithZeroMiddleBitsIsRemembered(t *testing.T) {
	fx := newRTCPFixture(t, ServiceTone)
	a := fx.s.legs[0]
	rx := quality.NewReceiver(8000)
	now := time.Now()
	for i := range 5 {
		rx.Update(uint16(i), uint32(i*160), now)
	}
	a.rx.Store(rx)
	a.remoteSSRC.Store(uint64(heard(0)))
	sr, err := rtcp.Marshal([]rtcp.Packet{&rtcp.SenderReport{SSRC: 0, NTPTime: 0x1234_0000_0000_5678, RTPTime: 800, PacketCount: 5, OctetCount: 800}})
	if err != nil {
		t.Fatal(err)
	}
	rtcpPort{s: fx.s, l: a}.HandleDatagram(sr, fx.srcRTCP, now)
	blocks := a.receptionReports(stampOf(now.Add(500 * time.Millisecond)))
	if len(blocks) != 1 || blocks[0].SSRC != 0 || blocks[0].LastSenderReport != 0 || blocks[0].Delay != 65536/2 {
		t.Fatalf("blocks %+v, want one about SSRC 0 with LSR 0 and DLSR %d (half a second)", blocks, 65536/2)
	}
}

// A report block relayed back to a source whose numbering the relay moved
// keeps an extended highest sequence number that counts the source's own
// wraps: as the far end's count goes up by one, so does the source's, and
// its low 16 bits are the source's sequence number.
func TestTranslatedReportBlockCountsTheSourcesCycles(t *testing.T) {
	for _, delta := range []uint16{10, 0xfff0, 58636} {
		received := outStream{started: true, transparent: true, ssrc: 4, inSSRC: 3, seqDelta: delta}
		own := outStream{}
		translate := func(ext uint32) uint32 {
			rr, _ := rtcp.Marshal([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: 4, LastSequenceNumber: ext}}}})
			translateRTCP(rr, &own, &received, &leg{})
			pkts, err := rtcp.Unmarshal(rr)
			if err != nil {
				t.Fatal(err)
			}
			return pkts[0].(*rtcp.ReceiverReport).Reports[0].LastSequenceNumber
		}
		prev := translate(1<<16 - 40)
		for ext := uint32(1<<16 - 39); ext < 3<<16; ext++ {
			got := translate(ext)
			if uint16(got) != uint16(ext)-delta {
				t.Fatalf("delta %d: %#x translated to %#x: low 16 bits not the source's %d", delta, ext, got, uint16(ext)-delta)
			}
			if got != prev+1 {
				t.Fatalf("delta %d: %#x translated to %#x, after %#x for the one before", delta, ext, got, prev)
			}
			prev = got
		}
	}
}

// Malformed RTCP is dropped and counted, never relayed: a datagram too
// short for a header, a length field past its end, counts of report
// blocks, chunks or sources the packet has no room for, padding anywhere
// but at the end or longer than the packet.
func TestMalformedRTCPIsDroppedAndCounted(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("0"))
	nodeRTCP := netip.AddrPortFrom(nodeA.Addr(), nodeA.Port()+1)
	bad := map[string][]byte{
		"truncated":              {0x80, 201, 0},
		"length past the end":    {0x80, 201, 0, 7, 0, 0, 0, 1},
		"31 blocks in an RR":     {0x9f, 201, 0, 1, 0, 0, 0, 1},
		"a block in a short SR":  {0x81, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"SR shorter than itself": {0x80, 200, 0, 1, 0, 0, 0, 1, 0x81, 202, 0, 1, 0, 0, 0, 1},
		"SDES chunks":            {0x83, 202, 0, 1, 0, 0, 0, 1},
		"BYE sources":            {0x85, 203, 0, 1, 0, 0, 0, 1},
		"padding not last":       {0xa0, 201, 0, 1, 0, 0, 0, 1, 0x80, 201, 0, 1, 0, 0, 0, 1},
		"padding past the start": {0xa0, 201, 0, 1, 0, 0, 0, 9},
	}
	for name, pkt := range bad {
		if validRTCP(pkt) {
			t.Errorf("%s: taken for valid RTCP", name)
		}
		if _, err := a.rtcp.WriteToUDPAddrPort(pkt, nodeRTCP); err != nil {
			t.Fatal(err)
		}
	}
	good := []byte{0x80, 201, 0, 1, 0, 0, 0, 1}
	if _, err := a.rtcp.WriteToUDPAddrPort(good, nodeRTCP); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = b.rtcp.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := b.rtcp.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], good) {
		t.Fatalf("B got %x (%v), want only the valid RR", buf[:n], err)
	}
	q, _ := e.Delete("s1")
	if got := q.Legs[0].Dropped.Malformed; got != uint64(len(bad)) {
		t.Fatalf("%d malformed packets counted, want %d", got, len(bad))
	}
}

// rtcpFixture is a session outside any engine loop, for driving the
// inbound RTCP path directly: leg A's endpoint sends from src (RTP) and
// srcRTCP; leg B has no address, so whatever is relayed to it stays in the
// buffer it was translated in.
type rtcpFixture struct {
	s            *session
	src, srcRTCP netip.AddrPort
}

func newRTCPFixture(tb testing.TB, service Service) *rtcpFixture {
	tb.Helper()
	pool, err := portpool.New("127.0.0.1", testPortMin+100, testPortMax)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := newMetrics(prometheus.NewRegistry(), pool, 1)
	if err != nil {
		tb.Fatal(err)
	}
	fx := &rtcpFixture{
		s:       &session{e: &Engine{metrics: m}, service: service},
		src:     netip.MustParseAddrPort("127.0.0.1:40000"),
		srcRTCP: netip.MustParseAddrPort("127.0.0.1:40001"),
	}
	legs := 2
	if service.terminates() {
		legs = 1
	}
	for i := range legs {
		pair, err := pool.Allocate()
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(pair.Release)
		fx.s.legs[i] = newLeg(Leg(i+1), pair, netip.MustParseAddr("127.0.0.1"), false, 0, &m.drops)
	}
	fx.reset()
	return fx
}

// reset puts the fixture back as it was built, so that every input of a
// fuzz run meets the same state and its coverage does not depend on the
// inputs before it.
func (fx *rtcpFixture) reset() {
	a := fx.s.legs[0]
	a.peer.Store(&peer{rtp: fx.src, rtcp: fx.srcRTCP, direction: sdpneg.SendRecv})
	a.rtpLatch.Store(nil)
	a.rtcpLatch.Store(nil)
	a.latchedFor = nil
	a.rx.Store(quality.NewReceiver(8000))
	a.remoteSSRC.Store(0)
	a.lastSR.store(0, 0, 0)
	r := &route{mode: routeSink, inClock: 8000, outClock: 8000}
	r.kinds[0] = ptAudio
	if fx.s.service.terminates() {
		fx.s.dirs[0] = newDirection(a, nil, false)
	} else {
		// A relay whose numbering is no longer its sources', so that
		// relayed RTCP is translated both ways.
		r.mode = routePassthrough
		b := fx.s.legs[1]
		fx.s.dirs[0] = newDirection(a, b, true)
		fx.s.dirs[1] = newDirection(b, a, true)
		fx.s.dirs[0].out = outStream{started: true, ssrc: 2, inSSRC: 1, seqDelta: 7, tsDelta: 9, report: new(streamReport)}
		fx.s.dirs[1].out = outStream{started: true, ssrc: 4, inSSRC: 3, seqDelta: 0xfff0, tsDelta: 1 << 31, report: new(streamReport)}
		fx.s.dirs[1].route.Store(r)
	}
	for _, d := range fx.s.dirs {
		if d != nil {
			d.s = fx.s
		}
	}
	fx.s.dirs[0].route.Store(r)
}

// FuzzHandleRTCP feeds arbitrary datagrams to the inbound RTCP path as
// they arrive, on the RTCP port and muxed on the RTP port, of a relay that
// translates and of a service that terminates the stream: nothing may
// panic, what validRTCP refuses is counted as malformed, what is relayed
// stays valid RTCP, and the reports built afterwards still marshal.
func FuzzHandleRTCP(f *testing.F) {
	compound, _ := rtcp.Marshal([]rtcp.Packet{
		&rtcp.SenderReport{SSRC: 1, NTPTime: 1 << 40, Reports: []rtcp.ReceptionReport{{SSRC: 4, LastSequenceNumber: 1<<16 | 3}}},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 1, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "x"}}}}},
		&rtcp.Goodbye{Sources: []uint32{1}},
		&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 4},
	})
	audio, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: 1, SSRC: 1}, Payload: make([]byte, 160)}).Marshal()
	for _, seed := range [][]byte{
		compound, audio, {},
		{0x80, 201, 0, 1, 0, 0, 0, 1},
		{0x9f, 201, 0, 1, 0, 0, 0, 1},
		{0x80, 200, 0, 1, 0, 0, 0, 1, 0x81, 202, 0, 1, 0, 0, 0, 1},
		{0xa0, 201, 0, 1, 0, 0, 0, 4},
	} {
		f.Add(seed)
	}
	fixtures := []*rtcpFixture{newRTCPFixture(f, ServiceNone), newRTCPFixture(f, ServiceTone)}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fx := range fixtures {
			fx.reset()
			a := fx.s.legs[0]
			now := time.Now()
			before := a.drops[dropMalformed].Load()
			pkt := append([]byte(nil), data...)
			rtcpPort{s: fx.s, l: a}.HandleDatagram(pkt, fx.srcRTCP, now)
			// What no datagram of the node's can be is dropped unread.
			valid := len(data) <= maxPacket && validRTCP(data)
			want := uint64(1)
			if valid {
				want = 0
			}
			if dropped := a.drops[dropMalformed].Load() - before; dropped != want {
				t.Fatalf("valid %v, counted %d malformed", valid, dropped)
			}
			if valid && len(pkt) == len(data) && !validRTCP(pkt) {
				t.Fatalf("%x translated into invalid %x", data, pkt)
			}
			muxed := append([]byte(nil), data...)
			fx.s.dirs[0].HandleDatagram(muxed, fx.src, now)
			if _, err := a.report(fx.s.dirs[0].out.report, 8000, true, true, now); err != nil {
				t.Fatalf("report after %x: %v", data, err)
			}
		}
	})
}

// A transcoding bridge's sender reports to an endpoint count the packets
// it was sent, of the packet time it asked for, and their payload octets.
func TestTranscodedSenderReportsCountThePacketsSent(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	e.rtcpEvery = 40 * time.Millisecond
	a, b := newEndpoint(t), newEndpoint(t)
	nodeA, _, _ := bridge(t, e, "s1", a.sdp("0"), b.sdp("8", "a=ptime:40"))
	for i, payload := range encodeTone(t, codec.PCMU, 8000, 24) {
		a.send(nodeA, rtp.Header{PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * 160), SSRC: 7}, payload)
	}
	pkts := receivePackets(t, b, 12)
	last := time.Now()
	deadline := last.Add(2 * time.Second)
	for {
		report, _, ok := b.tryCompound(time.Until(deadline))
		if !ok {
			t.Fatal("no sender report to B after its audio")
		}
		sr, isSR := report[0].(*rtcp.SenderReport)
		if !isSR || ntpToTime(sr.NTPTime).Before(last) {
			continue
		}
		if sr.SSRC != pkts[0].SSRC || sr.PacketCount != 12 || sr.OctetCount != 12*320 {
			t.Fatalf("SR from %#x counts %d packets, %d octets; want %#x, 12 packets of 320 octets", sr.SSRC, sr.PacketCount, sr.OctetCount, pkts[0].SSRC)
		}
		return
	}
}
