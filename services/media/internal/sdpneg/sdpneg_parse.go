package sdpneg

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// maxSDPBytes bounds what Parse accepts; a real audio SDP is a few hundred
// bytes and SIP over UDP cannot carry much more than a datagram.
const maxSDPBytes = 64 << 10

// Media is one m-line of a parsed SDP.
type Media struct {
	Kind    string   // "audio", "video", ...
	Proto   string   // "RTP/AVP", ...
	Formats []string // the m-line format list as written, kept to reject the line in an answer
	Port    int      // 0 means the stream is rejected or disabled

	// Fields below are filled for audio streams only.
	Addr            netip.Addr     // connection address, IPv4-mapped IPv6 unmapped; unspecified (0.0.0.0) is the legacy hold
	RTCP            netip.AddrPort // where RTCP goes: a=rtcp, else Addr and Port+1
	RTCPMux         bool           // a=rtcp-mux (RFC 5761)
	Codecs          []Codec        // audio formats in the peer's preference order, DTMF excluded
	TelephoneEvents []Codec        // RFC 4733 formats, one per clock rate offered
	Direction       Direction      // media level, else session level, else sendrecv
	Ptime           int            // packetization time in ms, 0 when absent
	MaxPtime        int            // longest packet it takes, in whole ms, 0 when absent
}

// RTP returns the address RTP is sent to.
func (m *Media) RTP() netip.AddrPort { return netip.AddrPortFrom(m.Addr, uint16(m.Port)) }

// TelephoneEvent returns the DTMF format at clockRate, if the peer offered one.
func (m *Media) TelephoneEvent(clockRate int) (Codec, bool) {
	for _, te := range m.TelephoneEvents {
		if te.ClockRate == clockRate {
			return te, true
		}
	}
	return Codec{}, false
}

// Description is the part of an SDP a relay acts on.
type Description struct {
	OriginSessionID uint64
	OriginVersion   uint64
	Media           []Media
	AudioIndex      int // index in Media of the audio stream we use
}

// Audio returns the audio stream we use.
func (d *Description) Audio() *Media { return &d.Media[d.AudioIndex] }

// Parse reads an SDP and picks its first active RTP audio stream. It returns
// an error wrapping ErrBadSDP when the SDP is malformed or carries no usable
// audio stream, and ErrUnsupportedCodec when the only audio streams use a
// transport we do not speak (for example SRTP).
func Parse(raw []byte) (*Description, error) {
	if len(raw) > maxSDPBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadSDP, len(raw))
	}
	var s sdp.SessionDescription
	if err := s.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	d := &Description{
		OriginSessionID: s.Origin.SessionID,
		OriginVersion:   s.Origin.SessionVersion,
		AudioIndex:      -1,
	}
	sessionDir := sessionDirection(s.Attributes)
	var unsupportedProto string
	for i, md := range s.MediaDescriptions {
		m := Media{
			Kind:    md.MediaName.Media,
			Proto:   strings.Join(md.MediaName.Protos, "/"),
			Formats: md.MediaName.Formats,
			Port:    md.MediaName.Port.Value,
		}
		if m.Port < 0 || m.Port > 65535 {
			return nil, fmt.Errorf("%w: m-line %d port %d", ErrBadSDP, i, m.Port)
		}
		d.Media = append(d.Media, m)
		if m.Kind != "audio" || m.Port == 0 || d.AudioIndex >= 0 {
			continue
		}
		if !plainRTP(m.Proto) {
			unsupportedProto = m.Proto
			continue
		}
		if err := parseAudio(&d.Media[i], &s, md, sessionDir); err != nil {
			return nil, fmt.Errorf("m-line %d: %w", i, err)
		}
		d.AudioIndex = i
	}
	if d.AudioIndex < 0 {
		if unsupportedProto != "" {
			return nil, fmt.Errorf("audio transport %s: %w", unsupportedProto, ErrUnsupportedCodec)
		}
		return nil, fmt.Errorf("%w: no active audio stream", ErrBadSDP)
	}
	return d, nil
}

// plainRTP reports whether proto is unencrypted RTP, the only transport this
// node relays. AVPF only adds feedback messages, which pass through as RTCP.
func plainRTP(proto string) bool {
	return proto == "RTP/AVP" || proto == "RTP/AVPF"
}

func sessionDirection(attrs []sdp.Attribute) Direction {
	for _, a := range attrs {
		if d := parseDirection(a.Key); d != DirectionUnknown {
			return d
		}
	}
	return SendRecv
}

func parseAudio(m *Media, s *sdp.SessionDescription, md *sdp.MediaDescription, sessionDir Direction) error {
	ci := md.ConnectionInformation
	if ci == nil {
		ci = s.ConnectionInformation
	}
	if ci == nil || ci.Address == nil {
		return fmt.Errorf("%w: no connection address", ErrBadSDP)
	}
	if ci.NetworkType != "IN" || (ci.AddressType != "IP4" && ci.AddressType != "IP6") {
		return fmt.Errorf("%w: connection %s %s", ErrBadSDP, ci.NetworkType, ci.AddressType)
	}
	addr, err := netip.ParseAddr(ci.Address.Address)
	if err != nil || addr.Zone() != "" || addr.IsMulticast() || (addr.Is4() != (ci.AddressType == "IP4")) {
		return fmt.Errorf("%w: connection address %q", ErrBadSDP, ci.Address.Address)
	}
	// An IPv4 address in IPv6 form (c=IN IP6 ::ffff:a.b.c.d) is an IPv4
	// endpoint: its packets arrive from plain a.b.c.d, so that is the
	// address they must be compared with and sent to (a=rtcp is read
	// the same way).
	addr = addr.Unmap()
	m.Addr = addr

	m.Direction = sessionDir
	rtpmaps := map[uint8]Codec{}
	fmtps := map[uint8]string{}
	for _, a := range md.Attributes {
		switch a.Key {
		case "rtpmap":
			if c, ok := parseRTPMap(a.Value); ok {
				rtpmaps[c.PT] = c
			}
		case "fmtp":
			ptText, params, ok := strings.Cut(a.Value, " ")
			if pt, okPT := parsePT(ptText); ok && okPT {
				fmtps[pt] = strings.TrimSpace(params)
			}
		case "rtcp-mux":
			m.RTCPMux = true
		case "ptime":
			// RFC 8866 §6.4 allows a decimal ("20.0"); frames are whole
			// milliseconds.
			if ms, ok := parseMilliseconds(a.Value); ok {
				m.Ptime = int(math.Round(ms))
			}
		case "maxptime":
			// RFC 4566 §6 gives it in whole milliseconds, but endpoints
			// write "40.0" here too. A limit is read down to the whole
			// milliseconds within it: rounded up, it could be exceeded.
			if ms, ok := parseMilliseconds(a.Value); ok {
				m.MaxPtime = int(math.Floor(ms))
			}
		case "rtcp":
			rtcp, err := parseRTCPAttr(a.Value, addr)
			if err != nil {
				return err
			}
			m.RTCP = rtcp
		default:
			if dir := parseDirection(a.Key); dir != DirectionUnknown {
				m.Direction = dir
			}
		}
	}
	if !m.RTCP.IsValid() {
		if m.Port == 65535 {
			return fmt.Errorf("%w: rtp port 65535 leaves no rtcp port", ErrBadSDP)
		}
		m.RTCP = netip.AddrPortFrom(addr, uint16(m.Port+1))
	}
	// RFC 3264 §8.4: the RFC 2543 way of holding a call sets the address to
	// 0.0.0.0; the endpoint then wants no media, whatever else it says.
	if addr.IsUnspecified() {
		switch m.Direction {
		case SendRecv:
			m.Direction = SendOnly
		case RecvOnly:
			m.Direction = Inactive
		}
	}

	for _, f := range md.MediaName.Formats {
		pt, ok := parsePT(f)
		if !ok {
			return fmt.Errorf("%w: payload type %q", ErrBadSDP, f)
		}
		c, ok := rtpmaps[pt]
		if !ok {
			if c, ok = staticPayloadTypes[pt]; !ok {
				// A dynamic payload type without rtpmap cannot be
				// interpreted; ignoring it keeps the rest usable.
				continue
			}
		}
		c.Fmtp = fmtps[pt]
		if strings.EqualFold(c.Name, TelephoneEvent) {
			m.TelephoneEvents = append(m.TelephoneEvents, c)
			continue
		}
		m.Codecs = append(m.Codecs, c)
	}
	return nil
}

// maxPacketTimeMs bounds the packet times read: longer is no audio stream
// anyone sends, and more likely a typo than a wish.
const maxPacketTimeMs = 1000

// parseMilliseconds reads a packet time attribute's value, a number of
// milliseconds that may have decimals; false for nonsense or one out of
// 1 ms to maxPacketTimeMs.
func parseMilliseconds(v string) (float64, bool) {
	ms, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	return ms, err == nil && ms >= 1 && ms <= maxPacketTimeMs
}

// parseRTCPAttr reads "a=rtcp:<port> [IN IP4 <addr>]" (RFC 3605).
func parseRTCPAttr(v string, rtpAddr netip.Addr) (netip.AddrPort, error) {
	fields := strings.Fields(v)
	if len(fields) != 1 && len(fields) != 4 {
		return netip.AddrPort{}, fmt.Errorf("%w: a=rtcp:%s", ErrBadSDP, v)
	}
	port, err := strconv.Atoi(fields[0])
	if err != nil || port < 1 || port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%w: a=rtcp port %q", ErrBadSDP, fields[0])
	}
	addr := rtpAddr
	if len(fields) == 4 {
		if fields[1] != "IN" {
			return netip.AddrPort{}, fmt.Errorf("%w: a=rtcp:%s", ErrBadSDP, v)
		}
		addr, err = netip.ParseAddr(fields[3])
		if err != nil || addr.Zone() != "" || addr.IsMulticast() {
			return netip.AddrPort{}, fmt.Errorf("%w: a=rtcp address %q", ErrBadSDP, fields[3])
		}
		addr = addr.Unmap()
		switch {
		case fields[2] == "IP4" && addr.Is4(), fields[2] == "IP6" && addr.Is6():
		default:
			return netip.AddrPort{}, fmt.Errorf("%w: a=rtcp address %q is not %s", ErrBadSDP, fields[3], fields[2])
		}
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
