package sipproxy

import (
	"bytes"
	"strings"

	"github.com/emiago/sipgo/sip"
)

const sdpContentType = "application/sdp"

// bodyMessage is a request or response whose body and headers we rewrite.
type bodyMessage interface {
	sip.Message
	GetHeader(name string) sip.Header
	ReplaceHeader(h sip.Header)
	RemoveHeader(name string) bool
}

// sdpBody returns the SDP a message carries, or nil when it carries none.
// A body of another type (multipart, say) is not ours to rewrite: the call
// then goes unanchored rather than with a body we half understood.
func sdpBody(m bodyMessage) []byte {
	body := m.Body()
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	ct := m.GetHeader("Content-Type")
	if ct == nil {
		// RFC 3261 20.15 requires Content-Type with a body; phones that
		// forget it send SDP.
		return body
	}
	mediaType, _, _ := strings.Cut(ct.Value(), ";")
	if !strings.EqualFold(strings.TrimSpace(mediaType), sdpContentType) {
		return nil
	}
	return body
}

// hasForeignBody reports a body that is not SDP.
func hasForeignBody(m bodyMessage) bool {
	return len(bytes.TrimSpace(m.Body())) > 0 && sdpBody(m) == nil
}

// setSDPBody replaces a message's body with sdp. Headers may be shared with
// the message it was cloned from, so Content-Type is replaced, never edited.
func setSDPBody(m bodyMessage, sdp []byte) {
	ct := sip.ContentTypeHeader(sdpContentType)
	if m.GetHeader("Content-Type") != nil {
		m.ReplaceHeader(&ct)
	} else {
		m.AppendHeader(&ct)
	}
	m.SetBody(sdp)
}

// dropBody removes a message's body (an SDP we could not pass through the
// node must not reach the other side, or media would bypass the node).
func dropBody(m bodyMessage) {
	m.RemoveHeader("Content-Type")
	m.SetBody(nil)
}
