package sipproxy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

const (
	// hangUpCSeqGap lifts the CSeq of a BYE the proxy sends on a party's
	// behalf above what that party used since the dialog was recorded (a
	// re-INVITE or two): a CSeq below the last one seen is rejected with
	// 500, a higher one is always accepted.
	hangUpCSeqGap = 1 << 16
	maxCSeq       = 1<<31 - 1
)

var errIncompleteDialog = errors.New("dialog lacks the contact or tags to reach the leg")

// hangUpDialog sends BYE to both legs of a call from the dialog the node
// kept, through this replica's own client transactions. It reports false
// when there were legs to hang up and none of their BYEs could be sent.
func (s *Server) hangUpDialog(log zerolog.Logger, d *callgridv1.Dialog, cause string) bool {
	if d == nil {
		log.Warn().Str("cause", cause).Msg("no dialog kept for the call; cannot hang up")
		return true
	}
	legsToHangUp, sent := 0, 0
	legs := []struct {
		name            string
		contact         string
		route           []string
		fromURI, fromTg string
		toURI, toTg     string
		cseq            uint32
	}{
		// To the caller, on the callee's behalf.
		{"caller", d.GetCallerContact(), d.GetCallerRoute(), d.GetCalleeUri(), d.GetCalleeTag(), d.GetCallerUri(), d.GetCallerTag(), d.GetCalleeCseq()},
		// To the callee, on the caller's behalf.
		{"callee", d.GetCalleeContact(), d.GetCalleeRoute(), d.GetCallerUri(), d.GetCallerTag(), d.GetCalleeUri(), d.GetCalleeTag(), d.GetCallerCseq()},
	}
	for _, l := range legs {
		if l.name == "callee" && l.contact == "" {
			// A media service answered the call: no callee to hang up.
			continue
		}
		req, err := s.byeRequest(d.GetCallId(), l.contact, l.route, l.fromURI, l.fromTg, l.toURI, l.toTg, l.cseq, cause)
		if err != nil {
			// What the dialog lacks, no replica has either.
			log.Warn().Err(err).Str("leg", l.name).Msg("cannot hang up leg")
			continue
		}
		legsToHangUp++
		s.m.mediaHangups.WithLabelValues(cause).Inc()
		if s.runDetached(log, req) {
			sent++
		}
	}
	return legsToHangUp == 0 || sent > 0
}

// byeRequest builds a BYE within a recorded dialog.
func (s *Server) byeRequest(callID, contact string, route []string, fromURI, fromTg, toURI, toTg string, seenCSeq uint32, cause string) (*sip.Request, error) {
	if contact == "" || fromTg == "" || toTg == "" {
		return nil, errIncompleteDialog
	}
	var ruri, from, to sip.Uri
	for _, p := range []struct {
		text string
		uri  *sip.Uri
	}{{contact, &ruri}, {fromURI, &from}, {toURI, &to}} {
		if err := sip.ParseUri(bareURI(p.text), p.uri); err != nil {
			return nil, fmt.Errorf("parse dialog uri %q: %w", p.text, err)
		}
	}
	req := sip.NewRequest(sip.BYE, ruri)
	req.SipVersion = "SIP/2.0"
	for _, r := range route {
		var u sip.Uri
		if err := sip.ParseUri(bareURI(r), &u); err != nil {
			return nil, fmt.Errorf("parse dialog route %q: %w", r, err)
		}
		req.AppendHeader(&sip.RouteHeader{Address: u})
	}
	mf := sip.MaxForwardsHeader(defaultMaxForwardsAdded)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{Address: from, Params: sip.HeaderParams{{K: "tag", V: fromTg}}})
	req.AppendHeader(&sip.ToHeader{Address: to, Params: sip.HeaderParams{{K: "tag", V: toTg}}})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: uint32(min(uint64(seenCSeq)+hangUpCSeqGap, maxCSeq)), MethodName: sip.BYE})
	// RFC 3326: tell both parties why the call ended.
	req.AppendHeader(sip.NewHeader("Reason", `SIP;cause=200;text="`+cause+`"`))
	req.AppendHeader(sip.NewHeader("User-Agent", s.cfg.UserAgent))
	req.SetBody(nil)
	// The route set may start with our own entries, which a replica
	// receiving the request would only take off again.
	s.popOwnRoutes(req)
	dest, transport := s.nextHop(req, "UDP")
	req.PrependHeader(s.ourVia(transport, s.newBranch(s.loopOf(req), callIDOf(req))))
	s.address(req, target{dest: dest, transport: transport})
	return req, nil
}

// bareURI takes the URI out of a name-addr ("<sip:x;lr>;param").
func bareURI(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return v[i+1 : i+j]
		}
	}
	return v
}
