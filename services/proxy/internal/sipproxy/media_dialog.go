package sipproxy

import (
	"github.com/emiago/sipgo/sip"
	"google.golang.org/protobuf/proto"
	"slices"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

// The node keeps each call's dialog so that any replica can hang up both
// legs of a call it never saw (media timeout, dead node). These helpers
// fill it from the messages the proxy relays.

// callerDialog is the caller's half of a dialog, from the INVITE as it
// arrived (req) and as it is forwarded (base: its Contact carries the NAT
// alias that reaches the caller).
func callerDialog(req, base *sip.Request) *callgridv1.Dialog {
	d := &callgridv1.Dialog{
		CallId:     req.CallID().Value(),
		CallerUri:  req.From().Address.String(),
		CallerTag:  fromTag(req),
		CalleeUri:  req.To().Address.String(),
		CallerCseq: req.CSeq().SeqNo,
	}
	if ct := base.Contact(); ct != nil {
		d.CallerContact = ct.Address.String()
	}
	// The Record-Routes that came with the INVITE are the proxies between
	// the caller and us, nearest first: our route toward the caller.
	for _, h := range req.GetHeaders("Record-Route") {
		d.CallerRoute = append(d.CallerRoute, h.Value())
	}
	return d
}

// withCallee returns d completed with the callee's half from its response.
func (s *Server) withCallee(d *callgridv1.Dialog, res *sip.Response) *callgridv1.Dialog {
	d = proto.CloneOf(d)
	if to := res.To(); to != nil {
		d.CalleeTag = to.Params.GetOr("tag", "")
	}
	if ct := res.Contact(); ct != nil {
		contact, _ := s.aliased(ct.Address, callIDOf(res), res.Source(), res.Transport())
		d.CalleeContact = contact.String()
	}
	d.CalleeRoute = s.calleeRoute(res)
	return d
}

// calleeRoute is our route toward the callee: the Record-Routes the
// proxies after us added (above our own entry), nearest first.
func (s *Server) calleeRoute(res *sip.Response) []string {
	entries := s.calleeRouteSet(res)
	route := make([]string, len(entries))
	for i, rr := range entries {
		route[i] = rr.Value()
	}
	return route
}

// calleeRouteSet is calleeRoute as the headers themselves. They are listed
// from the callee down to us, so a request from here follows them in
// reverse, nearest proxy first (RFC 3261 12.1.2).
func (s *Server) calleeRouteSet(res *sip.Response) []*sip.RecordRouteHeader {
	var above []*sip.RecordRouteHeader
	for _, h := range res.GetHeaders("Record-Route") {
		rr, ok := h.(*sip.RecordRouteHeader)
		if !ok || s.self.isSelf(rr.Address.Host, rr.Address.Port) {
			break
		}
		above = append(above, rr)
	}
	slices.Reverse(above)
	return above
}
