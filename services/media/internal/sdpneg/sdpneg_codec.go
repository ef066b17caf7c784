package sdpneg

import (
	"strconv"
	"strings"
)

// Codec is one payload format of an audio stream.
type Codec struct {
	PT        uint8
	Name      string // encoding name as written in the SDP, e.g. "PCMU", "opus"
	ClockRate int    // RTP clock rate in Hz
	Channels  int    // 1 when the SDP omits it
	Fmtp      string // format parameters, empty when absent
}

// TelephoneEvent is the encoding name of RFC 4733 DTMF events.
const TelephoneEvent = "telephone-event"

// Same reports whether c and o describe the same format, ignoring payload
// type numbers and format parameters: two legs may number a codec differently
// and still carry the same bits.
func (c Codec) Same(o Codec) bool {
	return strings.EqualFold(c.Name, o.Name) && c.ClockRate == o.ClockRate && c.Channels == o.Channels
}

// staticPayloadTypes are the RFC 3551 audio assignments an SDP may use
// without an rtpmap line.
var staticPayloadTypes = map[uint8]Codec{
	0:  {PT: 0, Name: "PCMU", ClockRate: 8000, Channels: 1},
	3:  {PT: 3, Name: "GSM", ClockRate: 8000, Channels: 1},
	4:  {PT: 4, Name: "G723", ClockRate: 8000, Channels: 1},
	8:  {PT: 8, Name: "PCMA", ClockRate: 8000, Channels: 1},
	9:  {PT: 9, Name: "G722", ClockRate: 8000, Channels: 1},
	13: {PT: 13, Name: "CN", ClockRate: 8000, Channels: 1},
	18: {PT: 18, Name: "G729", ClockRate: 8000, Channels: 1},
}

// StaticPayloadType returns the RFC 3551 codec for pt, if it has one.
func StaticPayloadType(pt uint8) (Codec, bool) {
	c, ok := staticPayloadTypes[pt]
	return c, ok
}

// parseRTPMap reads the value of an rtpmap attribute:
// "<pt> <name>/<clock>[/<channels>]".
func parseRTPMap(v string) (Codec, bool) {
	ptText, enc, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return Codec{}, false
	}
	pt, ok := parsePT(ptText)
	if !ok {
		return Codec{}, false
	}
	parts := strings.Split(strings.TrimSpace(enc), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return Codec{}, false
	}
	clock, err := strconv.Atoi(parts[1])
	if err != nil || clock <= 0 || clock > 1_000_000 {
		return Codec{}, false
	}
	channels := 1
	if strings.EqualFold(parts[0], "opus") {
		// RFC 7587 §7: opus is always "opus/48000/2", whatever the
		// stream carries. A sender that left the count out meant it, and
		// reading 1 would make its Opus differ from everyone else's.
		channels = 2
	}
	if len(parts) == 3 {
		channels, err = strconv.Atoi(parts[2])
		if err != nil || channels < 1 || channels > 255 {
			return Codec{}, false
		}
	}
	return Codec{PT: pt, Name: parts[0], ClockRate: clock, Channels: channels}, true
}

func parsePT(s string) (uint8, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 127 {
		return 0, false
	}
	return uint8(n), true
}

// Capability is a format this node can send and receive.
type Capability struct {
	Name      string
	ClockRate int
}

// Matches reports whether an offered codec is this capability.
func (c Capability) Matches(o Codec) bool {
	return strings.EqualFold(c.Name, o.Name) && c.ClockRate == o.ClockRate
}

// Supported returns the offered codecs that match one of caps, in the order
// the peer listed them (its preference).
func Supported(offered []Codec, caps []Capability) []Codec {
	var out []Codec
	for _, o := range offered {
		for _, c := range caps {
			if c.Matches(o) {
				out = append(out, o)
				break
			}
		}
	}
	return out
}
