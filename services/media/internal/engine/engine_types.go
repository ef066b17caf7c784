package engine

// Leg names one side of a session.
type Leg int

const (
	LegUnknown Leg = iota
	// LegA faces the caller, who sent the first offer.
	LegA
	// LegB faces the callee.
	LegB
)

func (l Leg) String() string {
	switch l {
	case LegA:
		return "A"
	case LegB:
		return "B"
	default:
		return "unknown"
	}
}

// index is the position of l in per-leg arrays.
func (l Leg) index() int { return int(l) - 1 }

// Service selects what a session does with leg A's media.
type Service int

const (
	// ServiceNone bridges leg A to leg B.
	ServiceNone Service = iota
	// ServiceEcho sends the caller's audio back to the caller.
	ServiceEcho
	// ServiceTone plays a tone to the caller.
	ServiceTone
)

func (s Service) String() string {
	switch s {
	case ServiceNone:
		return "bridge"
	case ServiceEcho:
		return "echo"
	case ServiceTone:
		return "tone"
	default:
		return "unknown"
	}
}

// terminates reports whether the session answers leg A itself.
func (s Service) terminates() bool { return s == ServiceEcho || s == ServiceTone }

// OfferParams is an offer from the caller.
type OfferParams struct {
	SessionID string
	CallID    string // for logs only
	SDP       []byte
	Service   Service
}

// Quality is the media quality of a session, per leg, as received by this
// node (what leg A sent us, what leg B sent us).
type Quality struct {
	Legs [2]LegQuality // [0] is leg A, [1] is leg B
}

// LegQuality describes one leg. In counts what the leg's endpoint sent us,
// Out what we sent it.
type LegQuality struct {
	Codec                                    string
	PacketsIn, PacketsOut, BytesIn, BytesOut uint64
	// Lost, Duplicates and Reordered count RTP packets from the endpoint,
	// over the whole call: across its SSRC changes and codec switches.
	Lost, Duplicates, Reordered int64
	// Expected is how many packets the endpoint's streams should have
	// brought over the whole call (RFC 3550 §6.4.1, summed over its
	// SSRCs): what Lost is a share of, for the MOS and the loss metric.
	Expected uint64
	// JitterMs is the RFC 3550 interarrival jitter at the end of the call.
	JitterMs float64
	// MOS estimates the listening quality of what the endpoint sent us,
	// 1 (bad) to 4.5 (best narrowband); 0 when nothing was received.
	MOS     float64
	Dropped Drops
}

// Drops counts packets this node discarded on a leg, by reason.
type Drops struct {
	// WrongSource: from an address other than the leg's peer (the "RTP
	// bleed" attack, or a stray stream).
	WrongSource uint64
	// Malformed: not a valid RTP/RTCP packet.
	Malformed uint64
	// UnknownPayloadType: a payload type the leg did not negotiate.
	UnknownPayloadType uint64
	// NoDestination: nowhere to send it yet (callee not answered) or the
	// other side does not want media (hold).
	NoDestination uint64
	// CodecError: transcoding could not decode or encode it.
	CodecError uint64
	// TooLate: relayed audio that came so late, behind event segment ends
	// the node inserted, that no sequence number of its own was left.
	TooLate uint64
}
