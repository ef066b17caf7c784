package sipproxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"

	"callgrid.dev/services/proxy/internal/location"
)

// A forwarded request's branches are served by one loop, on the goroutine
// handling the request (fork.run): it relays their responses, runs their
// timers and decides when the group is over. A group of one branch, the
// usual case (a gateway, an in-dialog request, a user with one phone), is
// read straight from its client transaction. A group of several is read
// through a fan-in: each branch gets a pump, a goroutine that hands its
// transaction's responses and end to the loop over one channel, and that
// ends with the branch, at its final response, its transaction's end or
// when the loop is done with it. The branches' timers (no answer, Timer C,
// the wait for a cancelled branch) are deadlines the loop keeps, behind a
// single timer armed for the earliest; so a call costs no goroutine per
// timer, and none beyond its branches' pumps. A forked branch whose
// sending may wait (a TCP connection to set up, a name to resolve) is sent
// aside, on a goroutine that ends once it is sent (sendAside), so that it
// delays no other branch of its group; its pump starts then.

// completedElsewhere is the Reason of the CANCELs that follow a 2xx of
// another branch (RFC 3326; RFC 3261 16.7 step 10): a phone shows the call
// as answered elsewhere rather than missed.
var completedElsewhere = sip.NewHeader("Reason", `SIP;cause=200;text="Call completed elsewhere"`)

// fork forwards one request: its groups of targets in turn, each group's
// branches at once.
type fork struct {
	s           *Server
	c           *call
	base        *sip.Request
	recordRoute bool

	// cancelled closes when the caller CANCELs the INVITE; nil once seen,
	// or for any other request.
	cancelled <-chan struct{}
	// callerReason holds the Reason headers of the caller's CANCEL, once
	// cancelled closed.
	callerReason []sip.Header
	// callerGone: the caller CANCELled and sipgo answered it 487.
	callerGone bool
	// answered: a 2xx went upstream.
	answered bool
	// stop: a branch's 2xx could not be carried (media): the call fails
	// with its error, and no further group is tried.
	stop bool
	// earlyDialog: a callee answered with a tagged provisional; it stops
	// serial failover, which must not ring a second callee.
	earlyDialog bool

	// events is the fan-in of the current group's pumps.
	events chan branchEvent
	pumps  sync.WaitGroup
}

// forkBranch is one branch while the loop serves it. Only the loop
// touches it, but for tx and quit, which its pump reads.
type forkBranch struct {
	t          target
	out        *sip.Request
	tx         sip.ClientTransaction
	isInvite   bool
	gatewayGen uint64
	// forked: the branch rings together with others, and is counted.
	forked bool
	// quit closes when the loop is done with the branch: its pump ends.
	quit chan struct{}
	// sending: the branch is being sent aside (sendAside). It has no
	// transaction yet, and no deadlines: what befalls it meanwhile (an
	// answer elsewhere, the caller's CANCEL) is applied once it is sent.
	sending bool

	// Deadlines of the branch's timers, zero while disarmed: the first
	// response stops noAnswer (BranchTimeout), a provisional restarts
	// Timer C (InviteTimeout), and giveUp bounds a cancelled branch's
	// wait for its final response (CancelWait).
	noAnswerAt, timerCAt, giveUpAt time.Time

	provisional bool
	cancelSent  bool
	timerCFired bool
	// callerGone: the caller cancelled while the branch was pending.
	callerGone bool
	// ended: the proxy cancelled the branch itself, another having
	// answered or declined (6xx); how it ends does not count. endReason
	// is the Reason its CANCEL carries.
	ended     bool
	endReason []sip.Header

	// The callee's early SDP as callMedia keeps it, for this branch's fork
	// alone: a 2xx without SDP is answered by its own fork's 18x.
	earlyAnswer, earlyUnanchored []byte

	done   bool
	result branchResult
}

// branchEvent is what a pump hands the loop: a response, or with res nil
// the end of the branch's transaction; or, with sent, how sending the
// branch aside went: its transaction, or the error.
type branchEvent struct {
	b   *forkBranch
	res *sip.Response

	sent    bool
	tx      sip.ClientTransaction
	sendErr error
}

// groupResult is how a group of branches ended.
type groupResult struct {
	answered  bool
	cancelled bool
	// stop forbids trying further groups: a 6xx, or a 2xx the call
	// cannot be carried with.
	stop bool
	// finals are the branches' results that count for bestResponse:
	// not those of branches the proxy cancelled itself.
	finals []branchResult
}

// Results the forked-branches counter counts.
const (
	forkAnswered  = "answered"
	forkFailed    = "failed"
	forkTimeout   = "timeout"
	forkCancelled = "cancelled"
	forkElsewhere = "elsewhere"
)

// checkCancelled reports whether the caller has cancelled, taking note of
// a CANCEL not seen yet.
func (f *fork) checkCancelled() bool {
	if f.cancelled != nil {
		select {
		case <-f.cancelled:
			f.cancelled = nil
			f.callerGone = true
		default:
		}
	}
	return f.callerGone
}

// run sends the group's branches at once and serves them until each has
// ended.
func (f *fork) run(group []target) groupResult {
	c := f.c
	branches := make([]*forkBranch, 0, len(group))
	pending := 0
	forked := len(group) > 1
	if forked && f.events == nil {
		f.events = make(chan branchEvent)
	}
	for _, t := range group {
		if forked {
			c.logger().Debug().Str("dest", t.dest).Str("q", location.QMilli(t.q).String()).Int("group", len(group)).Msg("forked branch")
		}
		b := f.start(t, forked)
		branches = append(branches, b)
		if !b.done {
			pending++
		}
	}
	var direct *forkBranch
	if pending == 1 && !forked {
		direct = branches[0]
	} else if pending > 0 {
		for _, b := range branches {
			if !b.done && !b.sending {
				f.startPump(b)
			}
		}
	}
	// Every pump has ended once every branch has: a branch's quit closes
	// when it ends, and a pump ends at the latest then. A branch being
	// sent aside has not ended: its send has yet to report.
	defer f.pumps.Wait()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for pending > 0 {
		var timerC <-chan time.Time
		if next := nextDeadline(branches); !next.IsZero() {
			timer.Reset(time.Until(next))
			timerC = timer.C
		} else {
			timer.Stop()
		}
		var dres <-chan *sip.Response
		var ddone <-chan struct{}
		if direct != nil && !direct.done {
			dres, ddone = direct.tx.Responses(), direct.tx.Done()
		}
		select {
		case res := <-dres:
			f.onResponse(branches, direct, res)
		case <-ddone:
			f.onDone(direct)
		case ev := <-f.events:
			f.onEvent(branches, ev)
		case now := <-timerC:
			// What came in by the deadline is served first: a 2xx that
			// beat its branch's give-up goes to the caller (RFC 3261 16.7
			// step 5), not with the abandoned branch to a hang-up.
			f.serveWaiting(branches, direct)
			for _, b := range branches {
				if !b.done {
					f.onDeadlines(b, now)
				}
			}
		case <-f.cancelled:
			f.cancelled = nil
			f.callerGone = true
			now := time.Now()
			for _, b := range branches {
				if !b.done {
					f.onCallerCancel(b, now)
				}
			}
		}
		pending = 0
		for _, b := range branches {
			if !b.done {
				pending++
			}
		}
	}

	// Between a user's contacts only a 6xx, or a call that cannot be
	// carried, stops: Timer C on one contact is as much a failure of its
	// group as a 486, after which the next group rings, as Kamailio's
	// t_next_contacts would ring it.
	g := groupResult{answered: f.answered, cancelled: f.callerGone && !f.answered, stop: f.stop}
	for _, b := range branches {
		if b.ended {
			continue
		}
		r := b.result
		if r.res != nil && r.res.StatusCode >= 600 {
			g.stop = true
		}
		g.finals = append(g.finals, r)
	}
	return g
}

// onEvent serves what a pump, or a branch's sending aside, handed the
// loop.
func (f *fork) onEvent(branches []*forkBranch, ev branchEvent) {
	if ev.sent {
		f.onSent(ev.b, ev.tx, ev.sendErr)
		return
	}
	if ev.b.done {
		return
	}
	if ev.res != nil {
		f.onResponse(branches, ev.b, ev.res)
	} else {
		f.onDone(ev.b)
	}
}

// waitingPerBranch bounds how many waiting responses serveWaiting takes
// per branch: a branch's provisional responses could otherwise keep its
// deadlines from ever being run.
const waitingPerBranch = 4

// serveWaiting serves, without waiting, the responses and ends the
// branches' transactions have already handed over. One that sipgo is
// still handing over at that instant is not waited for: its branch is
// abandoned, and an answer on it hung up.
func (f *fork) serveWaiting(branches []*forkBranch, direct *forkBranch) {
	for range waitingPerBranch * len(branches) {
		var dres <-chan *sip.Response
		if direct != nil && !direct.done {
			dres = direct.tx.Responses()
		}
		select {
		case res := <-dres:
			f.onResponse(branches, direct, res)
		case ev := <-f.events:
			f.onEvent(branches, ev)
		default:
			return
		}
	}
}

// isTimeout reports whether a branch's error is one of its timers.
func isTimeout(err error) bool {
	return errors.Is(err, errInviteTimeout) || errors.Is(err, errBranchTimeout)
}

// start builds and sends the branch to t; one that cannot be sent ends at
// once.
func (f *fork) start(t target, forked bool) *forkBranch {
	s, c := f.s, f.c
	// Each branch gets its own copy: base stays as it was for the next
	// target, and the client transaction keeps out until it ends.
	out := forwardCopy(f.base)
	out.Recipient = t.uri
	if t.holder != "" {
		alias, _ := t.uri.UriParams.Get(aliasParam)
		out.PrependHeader(s.relayRoute(out, t.holder, alias))
	}
	via := s.ourVia(t.transport, s.newBranch(c.loop, callIDOf(c.req)))
	if out.IsInvite() {
		c.media.markVia(via)
	}
	out.PrependHeader(via)
	if f.recordRoute {
		s.addRecordRoute(out, c.req.Transport(), t.transport, c.recordRouteParams())
	}
	s.address(out, t)

	b := &forkBranch{t: t, out: out, isInvite: out.IsInvite(), forked: forked}
	if t.gateway != nil {
		b.gatewayGen = t.gateway.gen.Load()
	}
	if forked && s.sendMayWait(out, t) {
		b.sending = true
		f.pumps.Add(1)
		// The call's goroutine may build the logger meanwhile: the one
		// sent aside is a copy, built now.
		log := *c.logger()
		go f.sendAside(b, func() *zerolog.Logger { return &log })
		return b
	}
	tx, err := s.sendBranch(c.logger, out, t)
	f.sent(b, tx, err)
	return b
}

// sendAside sends b off the loop, which it tells how that went. The loop
// waits for it: b is pending until then.
func (f *fork) sendAside(b *forkBranch, logger func() *zerolog.Logger) {
	defer f.pumps.Done()
	tx, err := f.s.sendBranch(logger, b.out, b.t)
	f.events <- branchEvent{b: b, sent: true, tx: tx, sendErr: err}
}

// onSent takes b, sent aside, into the loop, and applies what befell it
// while it was being sent, as endOthers and onCallerCancel would have.
func (f *fork) onSent(b *forkBranch, tx sip.ClientTransaction, err error) {
	b.sending = false
	if err != nil && b.callerGone {
		// Nothing went out: the branch ends with the caller's CANCEL.
		f.finish(b, branchResult{cancelled: true})
		return
	}
	f.sent(b, tx, err)
	if b.done {
		return
	}
	f.startPump(b)
	now := time.Now()
	switch {
	case b.callerGone:
		b.giveUpAt = now.Add(f.s.cfg.CancelWait)
	case b.ended && !b.isInvite:
		f.abandon(b)
		f.finish(b, branchResult{err: fmt.Errorf("branch to %s: %w", b.t.dest, sip.ErrTransactionTerminated)})
	case b.ended && !f.answered:
		b.giveUpAt = now.Add(endedProvisionalWait)
	}
}

// startPump starts b's pump.
func (f *fork) startPump(b *forkBranch) {
	b.quit = make(chan struct{})
	f.pumps.Add(1)
	go f.pump(b)
}

// sent records how sending b went: its transaction and timers, or its
// end.
func (f *fork) sent(b *forkBranch, tx sip.ClientTransaction, err error) {
	s, c := f.s, f.c
	if err != nil {
		f.finish(b, branchResult{err: fmt.Errorf("send to %s: %w", b.t.dest, errors.Join(sip.ErrTransactionTransport, err)), silent: true})
		return
	}
	b.tx = tx
	now := time.Now()
	b.noAnswerAt = now.Add(s.cfg.BranchTimeout)
	if b.isInvite {
		b.timerCAt = now.Add(s.cfg.InviteTimeout)
		// After the first 2xx sipgo hands retransmitted 2xx, and the 2xx
		// of other forks behind the branch, only to this hook; they must
		// reach the caller until it ACKs (RFC 6026).
		tx.OnRetransmission(func(r *sip.Response) {
			if r.IsSuccess() {
				up := s.upstreamResponse(c.req, r)
				if c.media.rewriteRetransmitted2xx(s, up) {
					_ = c.tx.Respond(up)
				}
			}
		})
	}
}

// pump hands the loop the responses of b's transaction and its end, until
// the final response, the end, or the loop's being done with b.
func (f *fork) pump(b *forkBranch) {
	defer f.pumps.Done()
	for {
		select {
		case res := <-b.tx.Responses():
			select {
			case f.events <- branchEvent{b: b, res: res}:
			case <-b.quit:
				return
			}
			if !res.IsProvisional() {
				// A final response ends what the transaction passes on:
				// sipgo hands what follows to the retransmission hook.
				return
			}
		case <-b.tx.Done():
			select {
			case f.events <- branchEvent{b: b}:
			case <-b.quit:
			}
			return
		case <-b.quit:
			return
		}
	}
}

// nextDeadline is the earliest armed deadline of the pending branches.
func nextDeadline(branches []*forkBranch) time.Time {
	var next time.Time
	for _, b := range branches {
		if b.done {
			continue
		}
		for _, d := range [...]time.Time{b.noAnswerAt, b.timerCAt, b.giveUpAt} {
			if !d.IsZero() && (next.IsZero() || d.Before(next)) {
				next = d
			}
		}
	}
	return next
}

// finish records how b ended; the loop is done with it.
func (f *fork) finish(b *forkBranch, r branchResult) {
	b.done, b.result = true, r
	if b.quit != nil {
		close(b.quit)
	}
	s, c := f.s, f.c
	if b.t.gateway != nil {
		s.judgeGateway(c, b.t.gateway, b.gatewayGen, r)
	}
	if b.forked {
		s.m.forkedBranches.WithLabelValues(forkResult(b)).Inc()
	}
	if r.err != nil && !b.ended {
		c.logger().Debug().Err(r.err).Str("dest", b.t.dest).Msg("branch failed")
	}
}

// forkResult is the counter's result for an ended branch.
func forkResult(b *forkBranch) string {
	r := b.result
	switch {
	case r.answered:
		return forkAnswered
	case b.ended:
		return forkElsewhere
	case r.cancelled:
		return forkCancelled
	case r.err != nil && isTimeout(r.err):
		return forkTimeout
	}
	return forkFailed
}

// sendCancel cancels b once (RFC 3261 16.10).
func (f *fork) sendCancel(b *forkBranch, reason ...sip.Header) {
	if !b.cancelSent {
		b.cancelSent = true
		f.s.cancelBranch(f.c, b.out, reason...)
	}
}

// abandon ends a branch the proxy gives up on. An INVITE's callee may
// answer it yet; that answer finds no transaction and is hung up.
func (f *fork) abandon(b *forkBranch) {
	if b.isInvite {
		f.s.abandoned.remember(f.c.logger(), b.out)
	}
	b.tx.Terminate()
}

// endedProvisionalWait is how long a branch the proxy ends, which has
// sent nothing back yet, is given to send a provisional response, after
// which alone it may be cancelled (RFC 3261 9.1): the 200 ms a UAS has
// for its 100 (17.2.1), after the INVITE's first retransmission (T1).
// A phone whose 100 was on its way gets its CANCEL and stops ringing;
// one that is gone (a stale contact) costs the caller's 6xx this long.
const endedProvisionalWait = time.Second

// endOthers cancels every pending branch but b: b answered, declined
// (6xx) or cannot be carried. A branch that sent nothing back yet may not
// be cancelled (RFC 3261 9.1): it is cancelled on its first provisional
// response. Once the caller has its 2xx nobody waits for such a branch,
// which keeps its own no-answer timer, so a phone whose first response is
// slow still gets its CANCEL and stops ringing; while the caller waits for
// its final response (a 6xx, a call that cannot be carried) the branch is
// abandoned after endedProvisionalWait. An abandoned branch is hung up
// should it answer after all. A request other than INVITE cannot be
// cancelled at all, and is abandoned at once.
func (f *fork) endOthers(branches []*forkBranch, b *forkBranch, reason ...sip.Header) {
	now := time.Now()
	for _, o := range branches {
		if o == b || o.done || o.ended || o.callerGone {
			continue
		}
		o.ended, o.endReason = true, reason
		switch {
		case o.sending:
			// Ended once sent (onSent).
		case !o.isInvite:
			f.abandon(o)
			f.finish(o, branchResult{err: fmt.Errorf("branch to %s: %w", o.t.dest, sip.ErrTransactionTerminated)})
		case !o.provisional && f.answered:
			// Its no-answer timer still runs (BranchTimeout).
		case !o.provisional:
			o.giveUpAt = now.Add(endedProvisionalWait)
		default:
			f.sendCancel(o, reason...)
			o.giveUpAt = now.Add(f.s.cfg.CancelWait)
		}
	}
}

// declinedReason is the Reason of the CANCELs that follow a branch's 6xx,
// as Kamailio sends it: the 6xx's status and phrase.
func declinedReason(res *sip.Response) sip.Header {
	phrase := strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < ' ' {
			return -1
		}
		return r
	}, res.Reason)
	return sip.NewHeader("Reason", "SIP;cause="+strconv.Itoa(res.StatusCode)+`;text="`+phrase+`"`)
}

// withForkMedia runs fn with the call's media seeing b's early SDP alone:
// forks answer the one offer each on their own (RFC 3261 13.2.1).
func (f *fork) withForkMedia(b *forkBranch, fn func()) {
	m := f.c.media
	if m == nil {
		fn()
		return
	}
	m.earlyAnswer, m.earlyUnanchored = b.earlyAnswer, b.earlyUnanchored
	fn()
	b.earlyAnswer, b.earlyUnanchored = m.earlyAnswer, m.earlyUnanchored
}

// onResponse relays or absorbs a response of b.
func (f *fork) onResponse(branches []*forkBranch, b *forkBranch, res *sip.Response) {
	s, c := f.s, f.c
	b.noAnswerAt = time.Time{}
	switch {
	case res.IsProvisional():
		if b.callerGone || b.timerCFired || b.ended {
			if !b.provisional && b.ended {
				// Cancelled only now (endOthers): its wait starts.
				b.giveUpAt = time.Now().Add(s.cfg.CancelWait)
			}
			b.provisional = true
			f.sendCancel(b, f.cancelReason(b)...)
			return
		}
		b.provisional = true
		if res.StatusCode == sip.StatusTrying {
			return
		}
		if b.isInvite {
			b.timerCAt = time.Now().Add(s.cfg.InviteTimeout)
		}
		if res.To() != nil && res.To().Params.Has("tag") {
			f.earlyDialog = true
		}
		if f.answered {
			// The caller has its final response: nothing more before it.
			return
		}
		up := s.upstreamResponse(c.req, res)
		f.withForkMedia(b, func() { s.mediaProvisional(c, res, up) })
		s.respond(c, up)
	case res.IsSuccess():
		if b.callerGone {
			// The caller already has its final answer; this answer
			// would leave the callee in a call nobody is on.
			s.hangUpLateAnswer(c.logger(), b.out, res)
			f.finish(b, branchResult{cancelled: true, err: errInviteTimeout, stop: true})
			return
		}
		up := s.upstreamResponse(c.req, res)
		if f.answered {
			// Another fork answered first. Every 2xx goes upstream (RFC
			// 3261 16.7 step 5), and the caller ends the dialogs it does
			// not keep; this one gets no media session of its own
			// (unanchorFork, through the check retransmissions get).
			if b.isInvite && c.media.rewriteRetransmitted2xx(s, up) {
				_ = c.tx.Respond(up)
			}
			f.finish(b, branchResult{answered: true})
			return
		}
		// After Timer C the caller still waits: its CANCEL lost the race,
		// and the answer goes upstream like any other (RFC 3261 16.7
		// step 5, 16.8).
		var err error
		f.withForkMedia(b, func() { err = s.mediaAnswered(c, res, up) })
		if err != nil {
			// The callee answered but the call cannot be carried: it is
			// hung up, the other branches are cancelled, and the caller
			// gets the error.
			s.hangUpLateAnswer(c.logger(), b.out, res)
			f.stop = true
			f.finish(b, branchResult{err: err, stop: true})
			f.endOthers(branches, b)
			return
		}
		if f.checkCancelled() {
			f.answerLostToCancel(branches, b, res)
			return
		}
		s.respond(c, up)
		// sipgo takes a CANCEL and a response under the transaction's
		// lock, and tells of the CANCEL (OnCancel) before it lets go:
		// cancelled has closed by now if the 2xx came too late, and
		// never closes for a CANCEL after it (RFC 6026 Accepted).
		if f.checkCancelled() {
			f.answerLostToCancel(branches, b, res)
			f.restoreTerminated()
			return
		}
		f.answered = true
		f.finish(b, branchResult{answered: true})
		if b.isInvite {
			f.endOthers(branches, b, completedElsewhere)
		} else {
			f.endOthers(branches, b)
		}
	default:
		switch {
		case b.callerGone:
			f.finish(b, branchResult{cancelled: true})
		case b.timerCFired:
			f.finish(b, branchResult{err: fmt.Errorf("branch to %s: %w", b.t.dest, errInviteTimeout), stop: true})
		default:
			f.finish(b, branchResult{res: s.upstreamResponse(c.req, res)})
			if res.StatusCode >= 600 && !b.ended && !f.answered {
				// No other branch may change the outcome but a 2xx that
				// crosses the CANCEL (RFC 3261 16.7 step 5): the 6xx goes
				// upstream once the cancelled branches have ended.
				f.endOthers(branches, b, declinedReason(res))
			}
		}
	}
}

// answerLostToCancel ends b, whose 2xx res did not reach the caller: its
// CANCEL reached its transaction first, which sipgo answered 487 (RFC 3261
// 9.2), and a 2xx cannot follow that. The callee is hung up, as on any
// answer the caller is not to get, the other branches are cancelled for
// the caller, and the session the node took the answer into is released
// with the unanswered call (endMedia).
func (f *fork) answerLostToCancel(branches []*forkBranch, b *forkBranch, res *sip.Response) {
	s, c := f.s, f.c
	s.hangUpLateAnswer(c.logger(), b.out, res)
	if c.media != nil {
		c.media.answered = false
	}
	f.finish(b, branchResult{cancelled: true})
	now := time.Now()
	for _, o := range branches {
		if !o.done {
			f.onCallerCancel(o, now)
		}
	}
}

// restoreTerminated hands the caller's transaction its 487 again after a
// 2xx that lost to the CANCEL: sipgo keeps the last response it is handed
// as the one to retransmit (Timer G) even once Completed, where it sends
// nothing at once, and the caller, whose ACK of the 487 may be lost, must
// not get that 2xx for a callee already hung up.
func (f *fork) restoreTerminated() {
	terminated := sip.NewResponseFromRequest(f.c.req, sip.StatusRequestTerminated, "Request Terminated", nil)
	if err := f.c.tx.Respond(terminated); err != nil {
		f.c.logger().Debug().Err(err).Msg("487 restored on the cancelled transaction")
	}
}

// cancelReason is the Reason a CANCEL of b carries: the caller's own when
// it cancelled (RFC 3326), none when Timer C fired.
func (f *fork) cancelReason(b *forkBranch) []sip.Header {
	if b.callerGone {
		return f.callerReason
	}
	return b.endReason
}

// onDone ends b, whose transaction ended without a final response.
func (f *fork) onDone(b *forkBranch) {
	if b.callerGone {
		f.finish(b, branchResult{cancelled: true})
		return
	}
	err := b.tx.Err()
	if err == nil {
		err = sip.ErrTransactionTerminated
	}
	f.finish(b, branchResult{err: fmt.Errorf("branch to %s: %w", b.t.dest, err), stop: b.timerCFired, silent: !b.provisional})
}

// onCallerCancel cancels b for the caller.
func (f *fork) onCallerCancel(b *forkBranch, now time.Time) {
	b.callerGone = true
	if b.sending {
		// Given up on once sent (onSent).
		return
	}
	// A CANCEL may only follow a provisional response (RFC 3261 9.1);
	// without one the branch is abandoned when it answers or times out.
	if b.provisional {
		f.sendCancel(b, f.callerReason...)
	}
	if b.giveUpAt.IsZero() {
		b.giveUpAt = now.Add(f.s.cfg.CancelWait)
	}
}

// onDeadlines runs b's timers that are due at now.
func (f *fork) onDeadlines(b *forkBranch, now time.Time) {
	s, c := f.s, f.c
	due := func(d time.Time) bool { return !d.IsZero() && !now.Before(d) }
	if due(b.noAnswerAt) {
		b.noAnswerAt = time.Time{}
		f.giveUp(b, branchResult{err: fmt.Errorf("branch to %s: %w", b.t.dest, errBranchTimeout), silent: true})
		return
	}
	if due(b.timerCAt) {
		b.timerCAt = time.Time{}
		b.timerCFired = true
		c.logger().Info().Str("dest", b.t.dest).Msg("timer c expired, cancelling branch")
		if !b.provisional {
			// Nothing came back, not even a 100: as good as a 408
			// (RFC 3261 16.8), after which the next target is tried.
			// Nobody rang, so nothing stops the failover.
			f.abandon(b)
			f.finish(b, branchResult{err: fmt.Errorf("branch to %s: %w", b.t.dest, errInviteTimeout), silent: true})
			return
		}
		f.sendCancel(b)
		if b.giveUpAt.IsZero() {
			b.giveUpAt = now.Add(s.cfg.CancelWait)
		}
	}
	if due(b.giveUpAt) {
		b.giveUpAt = time.Time{}
		f.giveUp(b, branchResult{err: fmt.Errorf("branch to %s: %w", b.t.dest, errInviteTimeout), stop: true})
	}
}

// giveUp abandons b, which ends as cancelled when the caller left, and as
// r otherwise.
func (f *fork) giveUp(b *forkBranch, r branchResult) {
	f.abandon(b)
	if b.callerGone {
		r = branchResult{cancelled: true}
	}
	f.finish(b, r)
}
