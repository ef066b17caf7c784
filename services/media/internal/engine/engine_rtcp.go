package engine

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/pion/rtcp"
)

// rtcpInterval is how often this node reports on a stream it terminates
// (RFC 3550 §6.2 suggests 5 s as the minimum for a two-party session).
const rtcpInterval = 5 * time.Second

// rtcpCNAME identifies this node in the SDES item every compound report
// must carry.
const rtcpCNAME = "callgrid-media"

// looksLikeRTCP tells RTCP from RTP on a muxed port by the packet type
// byte (RFC 5761 §4): 192-223 is RTCP.
func looksLikeRTCP(pkt []byte) bool {
	return len(pkt) >= 8 && pkt[0]>>6 == 2 && pkt[1] >= 192 && pkt[1] <= 223
}

// validRTCP checks a compound RTCP packet's framing: every header is
// version 2 with an RTCP type and the lengths add up to the datagram.
func validRTCP(pkt []byte) bool {
	if len(pkt) < 8 {
		return false
	}
	for off := 0; off < len(pkt); {
		if len(pkt)-off < 4 || pkt[off]>>6 != 2 || pkt[off+1] < 192 || pkt[off+1] > 223 {
			return false
		}
		off += (int(binary.BigEndian.Uint16(pkt[off+2:])) + 1) * 4
		if off > len(pkt) {
			return false
		}
	}
	return true
}

// handleRTCP relays RTCP between bridged legs, or absorbs it on a leg whose
// stream this node terminates, keeping what its reports need.
func (s *session) handleRTCP(l *leg, pkt []byte, src netip.AddrPort, muxed bool, now time.Time) {
	if !l.acceptRTCP(src, muxed) {
		l.drop(dropWrongSource)
		return
	}
	if !validRTCP(pkt) {
		l.drop(dropMalformed)
		return
	}
	s.e.metrics.rtcpIn.Inc()
	d := s.dirs[l.side.index()]
	if d == nil {
		return
	}
	if r := d.route.Load(); r != nil && r.mode == routePassthrough && d.to != nil && d.to != l {
		// The session's loop runs this and both directions' packet
		// handlers, so their streams' numbering can be read here.
		if rev := s.dirs[1-l.side.index()]; rev != nil {
			translateRTCP(pkt, &d.out, &rev.out)
		}
		d.to.sendRTCP(pkt, s.e)
		return
	}
	// A sender report: remember its NTP time for LSR/DLSR in ours.
	if pkt[1] == uint8(rtcp.TypeSenderReport) && len(pkt) >= 28 {
		l.lastSR.Store(binary.BigEndian.Uint32(pkt[10:]))
		l.lastSRAt.Store(int64(stampOf(now)))
	}
}

// sendRTCP writes an RTCP packet to the leg's endpoint: from the RTP
// socket when it muxes, else from the RTCP socket.
func (l *leg) sendRTCP(pkt []byte, e *Engine) {
	dst, muxed, ok := l.rtcpDestination()
	if !ok {
		return
	}
	conn := l.pair.RTCP
	if muxed {
		conn = l.pair.RTP
	}
	if err := conn.WriteTo(pkt, dst); err == nil {
		e.metrics.rtcpOut.Inc()
	}
}

// sendReports sends a receiver report to every leg whose stream this node
// terminates (echo, tone, transcoding), describing what it received.
func (s *session) sendReports(now time.Time, toneSSRC uint32) {
	for i, l := range s.legs {
		if l == nil {
			continue
		}
		var ours uint32
		switch {
		case s.service == ServiceTone:
			ours = toneSSRC
		case s.service == ServiceEcho:
			ours = s.dirs[0].out.shared.Load()
		default:
			r := s.dirs[i].route.Load()
			if r == nil || r.mode != routeTranscode {
				continue
			}
			ours = s.dirs[1-i].out.shared.Load()
		}
		if pkt, err := l.receiverReport(ours, stampOf(now)); err == nil {
			l.sendRTCP(pkt, s.e)
		}
	}
}

// receiverReport builds a compound RR + SDES about the leg's stream.
func (l *leg) receiverReport(ours uint32, now time.Duration) ([]byte, error) {
	rr := &rtcp.ReceiverReport{SSRC: ours}
	rx := l.rx.Load()
	if remote := l.remoteSSRC.Load(); remote != 0 && rx != nil {
		st := rx.Snapshot()
		if st.Valid {
			block := rtcp.ReceptionReport{
				SSRC:               remote,
				FractionLost:       st.FractionLostQ8,
				TotalLost:          uint32(st.CumulativeLost) & 0xffffff,
				LastSequenceNumber: st.ExtendedHighestSeq,
				Jitter:             st.Jitter,
			}
			if lsr := l.lastSR.Load(); lsr != 0 {
				block.LastSenderReport = lsr
				// DLSR is in units of 1/65536 s.
				block.Delay = uint32((now - time.Duration(l.lastSRAt.Load())) * 65536 / time.Second)
			}
			rr.Reports = []rtcp.ReceptionReport{block}
		}
	}
	sdes := &rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{
		Source: ours,
		Items:  []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: rtcpCNAME}},
	}}}
	return rtcp.Marshal([]rtcp.Packet{rr, sdes})
}

// clock is the session's timer goroutine: it paces the tone service and
// sends RTCP reports.
func (s *session) clock() {
	defer s.wg.Done()
	reports := time.NewTicker(s.e.rtcpEvery)
	defer reports.Stop()
	var (
		player *tonePlayer
		toneC  <-chan time.Time
	)
	if s.service == ServiceTone {
		player = newTonePlayer()
		ticker := time.NewTicker(frameDuration)
		defer ticker.Stop()
		toneC = ticker.C
		player.tick(s, time.Now())
	}
	for {
		select {
		case <-s.done:
			return
		case now := <-toneC:
			player.tick(s, now)
		case now := <-reports.C:
			var toneSSRC uint32
			if player != nil {
				toneSSRC = player.out.ssrc
			}
			s.sendReports(now, toneSSRC)
		}
	}
}
