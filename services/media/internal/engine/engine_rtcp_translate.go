package engine

import "encoding/binary"

// RTCP packet types a relay translates (RFC 3550 §6, RFC 4585 §6.1).
const (
	rtcpSR    = 200
	rtcpRR    = 201
	rtcpSDES  = 202
	rtcpBYE   = 203
	rtcpRTPFB = 205
	rtcpPSFB  = 206

	reportBlockLen = 24
)

// identity reports whether the stream goes out in its source's own
// numbering, so that RTCP about it needs no translation.
func (o *outStream) identity() bool {
	return !o.started || (o.ssrc == o.inSSRC && o.seqDelta == 0 && o.tsDelta == 0)
}

// translateRTCP rewrites, in place, a compound RTCP packet relayed from
// an endpoint whose stream goes out as own and who receives the stream
// that goes out as received, as an RFC 3550 §7.2 translator does. A
// relay keeps the source's numbering only until the source changes SSRC
// or the direction comes back from transcoding; from then on the far end
// knows the stream by own's SSRC, sequence and timestamps, and the
// endpoint knows the stream it receives by received's. What the endpoint
// says of its own stream (sender SSRC, the sender report's RTP time, SDES
// and BYE) is put into own's numbering; what it says of the stream it
// receives (report blocks, feedback's media SSRC) back into the numbering
// that stream's sender used. to is the leg own goes to, whose endpoint the
// packet is relayed to. The framing was checked by validRTCP.
func translateRTCP(pkt []byte, own, received *outStream, to *leg) {
	if own.identity() && received.identity() {
		return
	}
	for off := 0; off+4 <= len(pkt); {
		count := int(pkt[off] & 0x1f)
		end := off + (int(binary.BigEndian.Uint16(pkt[off+2:]))+1)*4
		body := pkt[off:end]
		switch pkt[off+1] {
		case rtcpSR:
			if len(body) >= 28 {
				if own.translateSSRC(body[4:8]) {
					binary.BigEndian.PutUint32(body[16:], binary.BigEndian.Uint32(body[16:])+own.tsDelta)
					own.writeSentCounts(body[20:28], to)
				}
				received.translateReports(body[28:], count)
			}
		case rtcpRR:
			if len(body) >= 8 {
				own.translateSSRC(body[4:8])
				received.translateReports(body[8:], count)
			}
		case rtcpSDES:
			translateSDES(body[4:], count, own)
		case rtcpBYE:
			for i := range count {
				if at := 4 + 4*i; at+4 <= len(body) {
					own.translateSSRC(body[at : at+4])
				}
			}
		case rtcpRTPFB, rtcpPSFB:
			if len(body) >= 12 {
				own.translateSSRC(body[4:8])
				received.untranslateSSRC(body[8:12])
			}
		}
		off = end
	}
}

// translateSSRC puts a source's SSRC into the outgoing numbering and
// reports whether it was the source's.
func (o *outStream) translateSSRC(field []byte) bool {
	if o.identity() || binary.BigEndian.Uint32(field) != o.inSSRC {
		return false
	}
	binary.BigEndian.PutUint32(field, o.ssrc)
	return true
}

// writeSentCounts puts into a relayed sender report's sender info (its
// packet and octet counts, RFC 3550 §6.4.1) what the stream's receiver,
// the endpoint of leg to, was sent under the stream's SSRC. Once the
// stream is renumbered, the source's own counts no longer describe it:
// they start over with a new source that the far end knows as the SSRC
// it had, and leave out what the node sent of its own in the stream
// (event segment ends, transcoded audio). RFC 3550 §7.2 has a translator
// that changes the data it relays correct the sender's counts. What the
// node sent is counted as it goes out, on the session's loop, which
// relays this report too: the source's packets sent before its report,
// which arrived before it, are in the counts.
func (o *outStream) writeSentCounts(field []byte, to *leg) {
	_, sent := o.report.sentUnder(to)
	// The fields are 32 bits and wrap (§6.4.1), as the counts do here.
	binary.BigEndian.PutUint32(field[0:], uint32(sent.packets))
	binary.BigEndian.PutUint32(field[4:], uint32(sent.octets))
}

// untranslateSSRC puts the outgoing SSRC back into the source's, and
// reports whether it was the outgoing one.
func (o *outStream) untranslateSSRC(field []byte) bool {
	if o.identity() || binary.BigEndian.Uint32(field) != o.ssrc {
		return false
	}
	binary.BigEndian.PutUint32(field, o.inSSRC)
	return true
}

// translateReports puts report blocks about the outgoing stream back into
// its source's numbering: SSRC, and the highest sequence number received.
// The extended highest sequence number (RFC 3550 §6.4.1) is moved as a
// whole, by a constant that never takes it below zero, so that its cycle
// count turns over where the source's numbering wraps rather than where
// ours does: the source sees it rise steadily, not fall back or leap by
// 65536 whenever the two wrap apart.
func (o *outStream) translateReports(blocks []byte, count int) {
	for i := range count {
		b := blocks[min(i*reportBlockLen, len(blocks)):]
		if len(b) < reportBlockLen {
			return
		}
		if o.untranslateSSRC(b[0:4]) {
			ext := binary.BigEndian.Uint32(b[8:])
			binary.BigEndian.PutUint32(b[8:], ext+uint32(-o.seqDelta))
		}
	}
}

// translateSDES puts the SSRC of each SDES chunk into own's numbering. A
// chunk is an SSRC and items, ended by a zero byte and padded to 32 bits.
func translateSDES(chunks []byte, count int, own *outStream) {
	at := 0
	for range count {
		if at+4 > len(chunks) {
			return
		}
		own.translateSSRC(chunks[at : at+4])
		at += 4
		for at < len(chunks) && chunks[at] != 0 {
			if at+1 >= len(chunks) {
				return
			}
			at += 2 + int(chunks[at+1])
		}
		at = (at + 4) &^ 3 // past the terminating zero, to the next word
	}
}
