package sipproxy

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// contentLengths counts a message's Content-Length headers, compact "l"
// included. sipgo frames a stream by the last one and keeps them all, so a
// message with two values is one length here and maybe another at the
// next hop, which then reads the rest of the stream from the wrong place.
// RFC 3261 20.14 allows a single value.
func contentLengths(msg sip.Message) int {
	type headered interface{ Headers() []sip.Header }
	m, ok := msg.(headered)
	if !ok {
		return 0
	}
	n := 0
	for _, h := range m.Headers() {
		if isContentLength(h) {
			n++
		}
	}
	return n
}

func isContentLength(h sip.Header) bool {
	if _, ok := h.(*sip.ContentLengthHeader); ok {
		return true
	}
	name := h.Name()
	return strings.EqualFold(name, "Content-Length") || strings.EqualFold(name, "l")
}
