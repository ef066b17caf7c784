package sipproxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// branchResult is how one branch of a forwarded request ended.
type branchResult struct {
	// res is the upstream-ready final non-2xx response, if the branch got one.
	res *sip.Response
	// err is set when the branch ended without a response (timeout, transport).
	err error
	// answered means a 2xx went upstream: the request is done.
	answered bool
	// cancelled means the caller CANCELled: sipgo already sent 487 upstream.
	cancelled bool
	// stop forbids serial failover to the next target (Timer C fired: the
	// callee rang). A user's next q group still rings (fork.run).
	stop bool
	// silent means the next hop sent nothing back at all, not even a 100.
	silent bool
}

// forwardOutcome is how a forwarded request ended upstream.
type forwardOutcome struct {
	answered  bool
	cancelled bool
	// code is the final status sent upstream when neither.
	code int
}

// mediaCause is the cause a media session of an unanswered call ends with.
func (o forwardOutcome) mediaCause() string {
	if o.cancelled {
		return "cancel"
	}
	return strconv.Itoa(o.code)
}

// forward relays a request statefully to its targets and sends the best
// final response upstream (RFC 3261 16.6-16.7). The registered contacts of
// a user are forked in parallel, a group of equal q-value at a time, the
// highest first (forkGroupLen); any other target is a group of its own,
// tried in turn (serial failover to the next gateway).
func (s *Server) forward(c *call, base *sip.Request, targets []target, recordRoute bool) forwardOutcome {
	f := &fork{s: s, c: c, base: base, recordRoute: recordRoute}
	if c.req.IsInvite() {
		s.sendTrying(c)
		cancelled := make(chan struct{})
		var once sync.Once
		// sipgo answers the CANCEL (200, then 487 on the INVITE) and calls this
		// under its transaction lock, so it only signals the branch loop. The
		// CANCEL's Reason goes on with ours (RFC 3326); the channel's close
		// publishes it to the loop.
		if !c.tx.OnCancel(func(r *sip.Request) {
			once.Do(func() {
				for _, h := range r.GetHeaders("Reason") {
					f.callerReason = append(f.callerReason, sip.HeaderClone(h))
				}
				close(cancelled)
			})
		}) {
			return forwardOutcome{cancelled: true}
		}
		f.cancelled = cancelled
	}
	var finals []branchResult
	for len(targets) > 0 {
		if f.checkCancelled() {
			return forwardOutcome{cancelled: true}
		}
		n := forkGroupLen(targets)
		group := targets[:n]
		targets = targets[n:]
		g := f.run(group)
		if g.answered || g.cancelled {
			return forwardOutcome{answered: g.answered, cancelled: g.cancelled}
		}
		finals = append(finals, g.finals...)
		if g.stop {
			break
		}
		if !group[0].fork {
			// Serial failover, one target at a time: only past a branch
			// that failed on its own hop, and never once a callee rang.
			if len(g.finals) == 0 {
				break
			}
			r := g.finals[len(g.finals)-1]
			if r.stop || f.earlyDialog || !failoverAllowed(r) {
				break
			}
		}
	}
	best := bestResponse(finals)
	switch {
	case best.res != nil:
		res := best.res
		if res.StatusCode == sip.StatusServiceUnavailable {
			// A 503 would make the caller think this proxy is overloaded
			// (RFC 3261 16.7 step 6): the failure belongs to the branch.
			// So does its Retry-After, which on our 500 would tell the
			// caller when this proxy takes calls again (21.5.1).
			res.StatusCode, res.Reason = sip.StatusInternalServerError, "Server Internal Error"
			removeHeaderFold(res, "Retry-After")
		}
		s.respond(c, res)
		return forwardOutcome{code: res.StatusCode}
	case best.err != nil:
		err := best.err
		if errors.Is(err, sip.ErrTransactionTransport) {
			// A branch the transport failed counts as a 503 (RFC 3261
			// 16.9), which is not forwarded as one either: our own 503
			// would tell the caller that this proxy is out of service.
			err = fmt.Errorf("%w: %w", errNextHopUnreachable, err)
		}
		s.fail(c, err)
		return forwardOutcome{code: s.classify(err).code}
	default:
		s.fail(c, errNoRoute)
		return forwardOutcome{code: s.classify(errNoRoute).code}
	}
}

// forkGroupLen is how many of targets, from the first, ring together: the
// registered contacts of the first one's q-value, which resolveTargets
// put next to each other, highest first (RFC 3261 16.6 leaves the order to
// the proxy; this is Kamailio's t_load_contacts and t_next_contacts). Any
// other target rings alone.
func forkGroupLen(targets []target) int {
	if !targets[0].fork {
		return 1
	}
	n := 1
	for n < len(targets) && targets[n].fork && targets[n].q == targets[0].q {
		n++
	}
	return n
}

// sendTrying answers 100 once per INVITE transaction: before a media claim,
// so the caller stops retransmitting while the fleet is asked.
func (s *Server) sendTrying(c *call) {
	if !c.tryingSent {
		c.tryingSent = true
		s.respond(c, s.tryingResponse(c.req))
	}
}

// tryingResponse is the 100 for an INVITE (RFC 3261 8.2.6.1), sent on every
// call. sipgo's NewResponseFromRequest clones each header it copies; the
// 100 shares From, To, Call-ID, CSeq and Timestamp with the request, which
// nothing edits, and clones only the top Via, which gets received/rport.
func (s *Server) tryingResponse(req *sip.Request) *sip.Response {
	res := sip.NewResponse(sip.StatusTrying, "Trying")
	res.SipVersion = "SIP/2.0"
	first := true
	for _, h := range req.Headers() {
		switch h.Name() {
		case "Via":
			if v, ok := h.(*sip.ViaHeader); ok && first {
				first = false
				top := v.Clone()
				if rport, ok := top.Params.Get("rport"); ok && rport == "" {
					host, port, _ := net.SplitHostPort(req.Source())
					top.Params.Add("rport", port)
					top.Params.Add("received", host)
				}
				res.AppendHeader(top)
				continue
			}
			res.AppendHeader(h)
		case "From", "To", "Call-ID", "CSeq":
			res.AppendHeader(h)
		default:
			if strings.EqualFold(h.Name(), "Timestamp") {
				res.AppendHeader(h)
			}
		}
	}
	res.SetBody(nil)
	res.AppendHeader(sip.NewHeader("Server", s.cfg.UserAgent))
	res.SetTransport(req.Transport())
	// Where the request came from (RFC 3581), as reply answers.
	res.SetDestination(req.Source())
	return res
}

// failoverAllowed reports whether a failed branch lets the next target be tried:
// no response, 408, or any 5xx.
func failoverAllowed(r branchResult) bool {
	if r.res == nil {
		return true
	}
	code := r.res.StatusCode
	return code == sip.StatusRequestTimeout || (code >= 500 && code < 600)
}

// bestResponse picks the final response to send upstream (RFC 3261 16.7 step
// 6): any 6xx, else the lowest class. A branch that timed out counts as a
// 408 and one the transport failed as a 503 (16.9). Within a class the
// first received wins, except that what says something about the callee
// beats what only says a branch failed: a 408 is the branch's timeout, not
// the callee's answer, so a later 486 or 404 is the one the caller needs;
// a 503 speaks of its own hop and is forwarded only when nothing else came;
// and the 4xx that tell the caller how to resubmit come first.
func bestResponse(finals []branchResult) branchResult {
	var best branchResult
	bestRank := math.MaxInt
	for _, r := range finals {
		if rk := responseRank(branchCode(r)); rk < bestRank {
			best, bestRank = r, rk
		}
	}
	return best
}

// branchCode is the status a branch ended with, as 16.7 and 16.9 count it.
func branchCode(r branchResult) int {
	switch {
	case r.res != nil:
		return r.res.StatusCode
	case errors.Is(r.err, errBranchTimeout), errors.Is(r.err, sip.ErrTransactionTimeout), errors.Is(r.err, errInviteTimeout):
		return sip.StatusRequestTimeout
	}
	return sip.StatusServiceUnavailable
}

// responseRank orders final responses for bestResponse: lower is better.
func responseRank(code int) int {
	class := code / 100
	if class >= 6 {
		return 0
	}
	sub := 1
	switch code {
	case sip.StatusUnauthorized, sip.StatusProxyAuthRequired, sip.StatusUnsupportedMediaType, sip.StatusBadExtension, sip.StatusAddressIncomplete:
		sub = 0
	case sip.StatusRequestTimeout, sip.StatusServiceUnavailable:
		sub = 2
	}
	return class*10 + sub
}

// sendContext bounds what sending a branch may wait for: a connection to
// set up or a name to resolve. A UDP branch to an IP address waits for
// neither, and skips the timer a deadline costs on every forwarded request.
func sendContext(t target) (context.Context, context.CancelFunc) {
	if sendsAtOnce(t) {
		return context.Background(), func() {}
	}
	return context.WithTimeout(context.Background(), defaultConnectTimeout)
}

// sendsAtOnce reports whether a request to t goes out without waiting for
// anything: over UDP to an IP address.
func sendsAtOnce(t target) bool {
	if t.transport != "UDP" {
		return false
	}
	_, err := netip.ParseAddrPort(t.dest)
	return err == nil
}

// address points a request at its target over the right socket.
func (s *Server) address(out *sip.Request, t target) {
	out.SetTransport(t.transport)
	out.SetDestination(t.dest)
	out.Laddr = sip.Addr{}
	if t.transport == "UDP" && s.udpConn != nil {
		s.udpLaddr.Copy(&out.Laddr)
	}
}

// cancelBranch sends CANCEL for a pending INVITE branch (RFC 3261 16.10),
// with reason's headers (RFC 3326), and absorbs the CANCEL's own responses
// on a short transaction goroutine.
func (s *Server) cancelBranch(c *call, inv *sip.Request, reason ...sip.Header) {
	cr := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	cr.SipVersion = inv.SipVersion
	cr.AppendHeader(inv.Via().Clone())
	for _, h := range inv.GetHeaders("Route") {
		cr.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(defaultMaxForwardsAdded)
	cr.AppendHeader(&mf)
	cr.AppendHeader(sip.HeaderClone(inv.From()))
	cr.AppendHeader(sip.HeaderClone(inv.To()))
	cr.AppendHeader(sip.HeaderClone(inv.CallID()))
	cr.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	for _, h := range reason {
		cr.AppendHeader(sip.HeaderClone(h))
	}
	cr.SetBody(nil)
	cr.SetTransport(inv.Transport())
	cr.SetDestination(inv.Destination())
	inv.Laddr.Copy(&cr.Laddr)
	s.runDetached(*c.logger(), cr)
}

// runDetached sends a request the proxy originates (CANCEL, BYE) and waits
// for its final response on a tracked goroutine bounded by BranchTimeout.
func (s *Server) runDetached(log zerolog.Logger, req *sip.Request) bool {
	ctx, cancel := context.WithTimeout(context.Background(), defaultConnectTimeout)
	tx, err := s.txl.Request(ctx, req)
	cancel()
	if err != nil {
		log.Warn().Err(err).Str("request", string(req.Method)).Msg("send proxy-originated request")
		return false
	}
	limit := s.cfg.BranchTimeout
	s.goTracked(func() {
		t := time.NewTimer(limit)
		defer t.Stop()
		for {
			select {
			case res := <-tx.Responses():
				if !res.IsProvisional() {
					return
				}
			case <-tx.Done():
				return
			case <-t.C:
				tx.Terminate()
				return
			}
		}
	})
	return true
}
