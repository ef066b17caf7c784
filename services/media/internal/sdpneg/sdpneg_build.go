package sdpneg

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/pion/sdp/v3"
)

// Local describes the audio stream this node offers or answers on one leg.
type Local struct {
	Addr            netip.Addr // advertised address
	Port            int        // RTP port; RTCP is Port+1 unless RTCPMux
	Codecs          []Codec    // formats, most preferred first, with the PTs we receive them on
	TelephoneEvents []Codec    // DTMF formats, usually one
	Direction       Direction
	RTCPMux         bool
	Ptime           int // ms; omitted when 0
	MaxPtime        int // ms; omitted when 0

	// Mirror is the offer this SDP answers. RFC 3264 §6 requires an answer
	// with the same m-lines in the same order, so every stream of the offer
	// except its audio stream is answered as rejected (port 0). Nil for an
	// offer.
	Mirror *Description
}

// Builder writes the SDPs of one leg. It keeps the origin line stable for
// the life of the session and increments its version whenever the content
// changes (RFC 3264 §8), so a peer can tell a re-offer from a repeat.
// A Builder is not safe for concurrent use; a session serialises its
// negotiations.
type Builder struct {
	sessionID uint64
	version   uint64 // of the last SDP built
	highest   uint64 // of any SDP built: a new content gets the next one
	last      []byte // the previous SDP with the origin version left out
}

// NewBuilder returns a builder with a random origin session id.
func NewBuilder() *Builder {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	// Keep it below 2^63 so peers parsing it as a signed integer cope.
	return &Builder{sessionID: binary.BigEndian.Uint64(b[:]) >> 1, version: 1, highest: 1}
}

// Version returns the origin version of the last built SDP.
func (b *Builder) Version() uint64 { return b.version }

// Build marshals l. Building the same content again returns the same SDP
// with the same version.
func (b *Builder) Build(l Local) ([]byte, error) {
	content, err := b.content(l)
	if err != nil {
		return nil, err
	}
	if b.last != nil && !bytes.Equal(content, b.last) {
		b.highest++
		b.version = b.highest
	}
	b.last = content
	return marshal(l, b.sessionID, b.version)
}

// BuildKeeping is Build, except that when l has the content of kept, an
// SDP this builder built before, it returns kept itself, version and all,
// whatever was built since: an endpoint whose session is back to what it
// was (a rejected offer rolled back) is told no new version of it. Any
// other content gets a version above every one built, which the endpoint
// may have seen.
func (b *Builder) BuildKeeping(l Local, kept []byte) ([]byte, error) {
	content, err := b.content(l)
	if err != nil {
		return nil, err
	}
	var prev sdp.SessionDescription
	if kept != nil && prev.Unmarshal(kept) == nil && prev.Origin.SessionID == b.sessionID && prev.Origin.SessionVersion <= b.highest {
		if same, err := marshal(l, b.sessionID, prev.Origin.SessionVersion); err == nil && bytes.Equal(same, kept) {
			b.last, b.version = content, prev.Origin.SessionVersion
			return kept, nil
		}
	}
	return b.Build(l)
}

// content is l marshalled with the origin version left out, for telling
// whether two SDPs differ.
func (b *Builder) content(l Local) ([]byte, error) {
	if !l.Addr.IsValid() {
		return nil, fmt.Errorf("build sdp: invalid address")
	}
	if l.Port <= 0 || l.Port > 65534 {
		return nil, fmt.Errorf("build sdp: port %d", l.Port)
	}
	if len(l.Codecs) == 0 {
		return nil, fmt.Errorf("build sdp: %w", ErrUnsupportedCodec)
	}
	return marshal(l, b.sessionID, 0)
}

func marshal(l Local, sessionID, version uint64) ([]byte, error) {
	addrType := "IP4"
	addr := l.Addr.Unmap()
	if addr.Is6() {
		addrType = "IP6"
	}
	s := sdp.SessionDescription{
		Origin: sdp.Origin{
			Username:       "-",
			SessionID:      sessionID,
			SessionVersion: version,
			NetworkType:    "IN",
			AddressType:    addrType,
			UnicastAddress: addr.String(),
		},
		SessionName: "callgrid",
		ConnectionInformation: &sdp.ConnectionInformation{
			NetworkType: "IN",
			AddressType: addrType,
			Address:     &sdp.Address{Address: addr.String()},
		},
		TimeDescriptions: []sdp.TimeDescription{{}},
	}
	audio := audioMedia(l)
	if l.Mirror == nil {
		s.MediaDescriptions = []*sdp.MediaDescription{audio}
	} else {
		for i, m := range l.Mirror.Media {
			if i == l.Mirror.AudioIndex {
				s.MediaDescriptions = append(s.MediaDescriptions, audio)
				continue
			}
			s.MediaDescriptions = append(s.MediaDescriptions, rejectedMedia(m))
		}
	}
	out, err := s.Marshal()
	if err != nil {
		return nil, fmt.Errorf("marshal sdp: %w", err)
	}
	return out, nil
}

func audioMedia(l Local) *sdp.MediaDescription {
	proto := []string{"RTP", "AVP"}
	if l.Mirror != nil && l.Mirror.Audio().Proto == "RTP/AVPF" {
		proto = []string{"RTP", "AVPF"}
	}
	md := &sdp.MediaDescription{
		MediaName: sdp.MediaName{Media: "audio", Port: sdp.RangedPort{Value: l.Port}, Protos: proto},
	}
	all := make([]Codec, 0, len(l.Codecs)+len(l.TelephoneEvents))
	all = append(append(all, l.Codecs...), l.TelephoneEvents...)
	for _, c := range all {
		pt := strconv.Itoa(int(c.PT))
		md.MediaName.Formats = append(md.MediaName.Formats, pt)
		rtpmap := pt + " " + c.Name + "/" + strconv.Itoa(c.ClockRate)
		if c.Channels > 1 {
			rtpmap += "/" + strconv.Itoa(c.Channels)
		}
		md.Attributes = append(md.Attributes, sdp.Attribute{Key: "rtpmap", Value: rtpmap})
		if c.Fmtp != "" {
			md.Attributes = append(md.Attributes, sdp.Attribute{Key: "fmtp", Value: pt + " " + c.Fmtp})
		}
	}
	if l.Ptime > 0 {
		md.Attributes = append(md.Attributes, sdp.Attribute{Key: "ptime", Value: strconv.Itoa(l.Ptime)})
	}
	if l.MaxPtime > 0 {
		md.Attributes = append(md.Attributes, sdp.Attribute{Key: "maxptime", Value: strconv.Itoa(l.MaxPtime)})
	}
	if l.RTCPMux {
		md.Attributes = append(md.Attributes, sdp.Attribute{Key: "rtcp-mux"})
	}
	dir := l.Direction
	if dir == DirectionUnknown {
		dir = SendRecv
	}
	md.Attributes = append(md.Attributes, sdp.Attribute{Key: dir.String()})
	return md
}

func rejectedMedia(m Media) *sdp.MediaDescription {
	formats := m.Formats
	if len(formats) == 0 {
		// An m-line needs at least one format even when rejected.
		formats = []string{"0"}
	}
	proto := m.Proto
	if proto == "" {
		proto = "RTP/AVP"
	}
	kind := m.Kind
	if kind == "" {
		kind = "audio"
	}
	return &sdp.MediaDescription{
		MediaName: sdp.MediaName{Media: kind, Port: sdp.RangedPort{Value: 0}, Protos: []string{proto}, Formats: formats},
	}
}
