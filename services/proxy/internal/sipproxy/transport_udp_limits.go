package sipproxy

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Message sizes over UDP (Config.UDPMTU, UDPMTUTryProto, UDPMaxMessageSize).
const (
	// DefaultUDPMTU is RFC 3261 18.1.1's threshold when the path MTU is
	// unknown: 1300 bytes, leaving room for IP and UDP headers and tunnels.
	DefaultUDPMTU = 1300
	// DefaultUDPMTUTryProto is what a request above udp_mtu tries.
	DefaultUDPMTUTryProto = "tcp"
	// DefaultUDPMaxMessageSize is the largest UDP payload of one IPv4
	// datagram: 65535 less the IP and UDP headers.
	DefaultUDPMaxMessageSize = 65507
	// minUDPMessageSize is sipgo's own default limit, below which common
	// messages would no longer go out at all.
	minUDPMessageSize = 1300
	// minUDPMTU keeps a mistyped udp_mtu (kilobytes, say) from sending
	// every request over TCP.
	minUDPMTU = 512
	// sipgoUDPReserve is what sipgo keeps below sip.UDPMTUSize: it
	// refuses to send a UDP message larger than UDPMTUSize-200.
	sipgoUDPReserve = 200
	// sipgoReadBuffer is sipgo's default read buffer, kept when
	// max_message_size fits in it: TCP and WebSocket connections each
	// have one too.
	sipgoReadBuffer = 32768
	// maxReadBuffer is the most sipgo's uint16 buffer size can hold; no
	// UDP datagram is larger, so a read of this size is never cut.
	maxReadBuffer = 65535
)

// ApplyUDPLimits sets sipgo's process-wide UDP limits from cfg: the send
// limit to udp_max_message_size, and the read buffer above
// max_message_size. A datagram larger than the buffer is cut to it by the
// kernel without an error, and one without Content-Length would then be
// parsed short; with a buffer larger than max_message_size, a cut read is
// always too large and is dropped before parsing (readFilter). Run it once
// at start, before any server, as ApplyTransactionLinger.
func ApplyUDPLimits(cfg Config) {
	sip.UDPMTUSize, sip.TransportBufferReadSize = udpLimits(cfg)
}

// udpLimits returns sipgo's UDP send limit and read buffer size for cfg.
func udpLimits(cfg Config) (mtuSize int, readBuffer uint16) {
	cfg = cfg.WithDefaults()
	return cfg.UDPMaxMessageSize + sipgoUDPReserve, uint16(min(max(cfg.MaxMessageSize+1, sipgoReadBuffer), maxReadBuffer))
}

// validateUDPLimits checks the UDP size settings, after defaults.
func (c Config) validateUDPLimits(bad func(field, format string, args ...any)) {
	if c.UDPMaxMessageSize < minUDPMessageSize || c.UDPMaxMessageSize > DefaultUDPMaxMessageSize {
		bad("udp_max_message_size", "%d outside %d..%d", c.UDPMaxMessageSize, minUDPMessageSize, DefaultUDPMaxMessageSize)
	}
	if c.UDPMTU < minUDPMTU || c.UDPMTU > c.UDPMaxMessageSize {
		bad("udp_mtu", "%d outside %d..udp_max_message_size (%d)", c.UDPMTU, minUDPMTU, c.UDPMaxMessageSize)
	}
	if !strings.EqualFold(c.UDPMTUTryProto, "tcp") && !strings.EqualFold(c.UDPMTUTryProto, "udp") {
		bad("udp_mtu_try_proto", "%q is not tcp or udp", c.UDPMTUTryProto)
	}
}

// cutByReadBuffer reports whether a datagram of n bytes may have been cut
// by sipgo's read buffer: it filled it. Only when ApplyUDPLimits did not
// run can that happen below max_message_size.
func cutByReadBuffer(n int) bool { return n >= int(sip.TransportBufferReadSize) }
