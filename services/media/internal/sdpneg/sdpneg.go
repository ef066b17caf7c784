// Package sdpneg reads and writes the audio part of SDP offers and answers
// (RFC 3264, RFC 4566) for a media relay. Parsing and marshalling go through
// pion/sdp; this package only interprets the fields a relay needs: where to
// send, which codecs, which payload type carries DTMF, and the direction.
package sdpneg

import "errors"

var (
	// ErrBadSDP means the SDP could not be parsed or has no usable audio
	// stream (no audio m-line, no or malformed connection address, bad port).
	ErrBadSDP = errors.New("bad sdp")
	// ErrUnsupportedCodec means the SDP is well formed but offers no codec
	// (or no transport) this node can handle.
	ErrUnsupportedCodec = errors.New("no supported codec or transport in sdp")
)

// Direction is the media direction attribute of a stream (RFC 3264 §5.1),
// as declared by the endpoint that wrote the SDP.
type Direction int

const (
	DirectionUnknown Direction = iota
	SendRecv
	SendOnly
	RecvOnly
	Inactive
)

func (d Direction) String() string {
	switch d {
	case SendRecv:
		return "sendrecv"
	case SendOnly:
		return "sendonly"
	case RecvOnly:
		return "recvonly"
	case Inactive:
		return "inactive"
	default:
		return "unknown"
	}
}

// Sends reports whether the endpoint that declared d will send media.
func (d Direction) Sends() bool { return d == SendRecv || d == SendOnly }

// Receives reports whether the endpoint that declared d wants media.
func (d Direction) Receives() bool { return d == SendRecv || d == RecvOnly }

// Answer is the direction an answerer that terminates the media uses in reply
// to an offer declaring d (RFC 3264 §6.1): sendonly is met by recvonly and
// the other way round.
func (d Direction) Answer() Direction {
	switch d {
	case SendOnly:
		return RecvOnly
	case RecvOnly:
		return SendOnly
	case Inactive:
		return Inactive
	default:
		return SendRecv
	}
}

// Within is an answerer's direction d as RFC 3264 §6.1 lets it answer an
// offer declaring offer: it may send only what the offerer receives and
// receive only what the offerer sends. A relay passing a far end's answer
// on uses it, so that a far end that ignored the rule does not make the
// relay break it too.
func (d Direction) Within(offer Direction) Direction {
	sends := d.Sends() && offer.Receives()
	receives := d.Receives() && offer.Sends()
	switch {
	case sends && receives:
		return SendRecv
	case sends:
		return SendOnly
	case receives:
		return RecvOnly
	default:
		return Inactive
	}
}

func parseDirection(s string) Direction {
	switch s {
	case "sendrecv":
		return SendRecv
	case "sendonly":
		return SendOnly
	case "recvonly":
		return RecvOnly
	case "inactive":
		return Inactive
	default:
		return DirectionUnknown
	}
}
