package sipproxy

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Reasons a gateway leaves or rejoins the rotation, as metric labels.
const (
	reasonTimeout   = "timeout"   // a call's branch got no response at all
	reasonTransport = "transport" // a call's branch could not be sent or its connection failed
	reasonResponse  = "response"  // a call was answered with a code of the failure policy
	reasonProbe     = "probe"     // OPTIONS probes
	reasonHoldDown  = "hold_down" // the hold-down after a failed call ran out
)

// callFailureReasons label the failures a call can charge to a gateway.
var callFailureReasons = [...]string{reasonTimeout, reasonTransport, reasonResponse}

// failurePolicy is a group's GatewayFailure, defaults applied.
type failurePolicy struct {
	disabled      bool
	downAfter     int32
	codes         []int
	holdDown      time.Duration
	maxRetryAfter time.Duration
}

func newFailurePolicy(f GatewayFailure) *failurePolicy {
	return &failurePolicy{
		disabled:      f.Disabled,
		downAfter:     int32(max(f.DownAfter, 1)),
		codes:         f.Codes,
		holdDown:      f.HoldDown,
		maxRetryAfter: f.MaxRetryAfter,
	}
}

// branchVerdict is what a finished branch says about its gateway.
type branchVerdict int

const (
	verdictUnknown branchVerdict = iota // nothing: cancelled by the caller, or ended by us
	verdictAlive                        // it answered in a way that shows it working
	verdictFailed                       // the call failed on the gateway itself
)

func (v branchVerdict) String() string {
	switch v {
	case verdictAlive:
		return "alive"
	case verdictFailed:
		return "failed"
	}
	return "unknown"
}

// gatewayFault describes a failed branch charged to its gateway.
type gatewayFault struct {
	reason string
	// status is the final response's code when reason is response.
	status int
	// retryAfter is a 503's Retry-After, capped by the policy.
	retryAfter time.Duration
}

// judge tells what r says about the gateway it was sent to.
func (p *failurePolicy) judge(r branchResult) (branchVerdict, gatewayFault) {
	switch {
	case p.disabled, r.cancelled:
		// A call the caller gave up on proves nothing either way, even
		// when the gateway had not answered yet.
		return verdictUnknown, gatewayFault{}
	case r.answered:
		return verdictAlive, gatewayFault{}
	case r.res != nil:
		code := r.res.StatusCode
		if code == sip.StatusServiceUnavailable {
			if ra := retryAfter(r.res); ra > 0 {
				return verdictFailed, gatewayFault{reason: reasonResponse, status: code, retryAfter: min(ra, p.maxRetryAfter)}
			}
		}
		if slices.Contains(p.codes, code) {
			return verdictFailed, gatewayFault{reason: reasonResponse, status: code}
		}
		return verdictAlive, gatewayFault{}
	case errors.Is(r.err, sip.ErrUDPMTUCongestion):
		// The request was too large for UDP: its fault, not the
		// gateway's. Counted, one caller's large INVITE would take the
		// whole group out, gateway after gateway of the failover.
		return verdictUnknown, gatewayFault{}
	case errors.Is(r.err, sip.ErrTransactionTransport):
		return verdictFailed, gatewayFault{reason: reasonTransport}
	case r.silent && isBranchTimeout(r.err):
		return verdictFailed, gatewayFault{reason: reasonTimeout}
	case r.silent:
		// Ended without a word for another cause: the transaction was
		// terminated here, as on shutdown.
		return verdictUnknown, gatewayFault{}
	}
	// It had answered (rang until Timer C, or a 2xx the media could not
	// carry): the branch failed, the gateway did not.
	return verdictAlive, gatewayFault{}
}

func isBranchTimeout(err error) bool {
	return errors.Is(err, errBranchTimeout) || errors.Is(err, errInviteTimeout) || errors.Is(err, sip.ErrTransactionTimeout)
}

// retryAfter reads the delta-seconds of a Retry-After header (RFC 3261
// 20.33), ignoring its comment and parameters; 0 when absent or unreadable.
func retryAfter(res *sip.Response) time.Duration {
	h := res.GetHeader("Retry-After")
	if h == nil {
		return 0
	}
	v := strings.TrimSpace(h.Value())
	end := 0
	for end < len(v) && v[end] >= '0' && v[end] <= '9' {
		end++
	}
	// More than 9 digits is decades: cap before it can overflow.
	secs, err := strconv.Atoi(v[:min(end, 9)])
	if err != nil {
		return 0
	}
	return time.Duration(secs) * time.Second
}

// judgeGateway updates the health of the gateway a branch went to. gen is
// the gateway's state generation when the branch was sent.
func (s *Server) judgeGateway(c *call, gw *gatewayState, gen uint64, r branchResult) {
	verdict, fault := gw.policy.judge(r)
	switch verdict {
	case verdictAlive:
		// A load first: every answered call would otherwise write the
		// shared cache line.
		if gw.callFails.Load() != 0 {
			gw.callFails.Store(0)
		}
	case verdictFailed:
		s.gatewayFailed(c, gw, gen, fault)
	}
}

// gatewayFailed charges a failed call to gw and takes it out of rotation
// once the policy's threshold is reached, or at once for a 503 with
// Retry-After.
func (s *Server) gatewayFailed(c *call, gw *gatewayState, gen uint64, fault gatewayFault) {
	s.m.gatewayFailures.WithLabelValues(gw.group, gw.cfg.Name, fault.reason).Inc()
	fails, hold, down := s.chargeFailure(gw, gen, fault)
	if !down {
		return
	}
	ev := c.logger().Warn().Str("group", gw.group).Str("gateway", gw.cfg.Name).
		Str("reason", fault.reason).Int32("consecutive_failures", fails)
	if fault.status != 0 {
		ev = ev.Int("status", fault.status)
	}
	if fault.retryAfter > 0 {
		ev = ev.Dur("retry_after", fault.retryAfter)
	}
	if hold > 0 {
		ev = ev.Dur("hold_down", hold)
	}
	ev.Msg("gateway down")
}

// chargeFailure counts the failure and reports whether it took gw down,
// and for how long when no probe will bring it back. A failure of a
// branch sent before gw last changed state is not counted.
func (s *Server) chargeFailure(gw *gatewayState, gen uint64, fault gatewayFault) (fails int32, hold time.Duration, down bool) {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	if gw.gen.Load() != gen || !gw.up.Load() {
		return 0, 0, false
	}
	fails = gw.callFails.Add(1)
	if fails < gw.policy.downAfter && fault.retryAfter == 0 {
		return fails, 0, false
	}
	s.setDownLocked(gw, fault.reason)
	if fault.retryAfter > 0 {
		gw.heldUntil = time.Now().Add(fault.retryAfter)
	}
	if s.cfg.Probe.Disabled {
		hold = max(gw.policy.holdDown, fault.retryAfter)
		s.scheduleHoldDownLocked(gw, hold)
	}
	return fails, hold, true
}

// scheduleHoldDownLocked brings gw back after hold unless its state has
// changed by then. gw.mu is held.
func (s *Server) scheduleHoldDownLocked(gw *gatewayState, hold time.Duration) {
	gen := gw.gen.Load()
	gw.holdDown = time.AfterFunc(hold, func() {
		gw.mu.Lock()
		defer gw.mu.Unlock()
		if gw.gen.Load() != gen {
			return
		}
		s.setUpLocked(gw)
		s.logGatewayUp(gw, reasonHoldDown)
	})
}

// setDownLocked takes gw out of rotation. Probe successes are counted
// afresh from now: those before the failure do not bring it back.
func (s *Server) setDownLocked(gw *gatewayState, reason string) {
	gw.up.Store(false)
	gw.gen.Add(1)
	gw.successes = 0
	gw.callFails.Store(0)
	s.m.gatewayUp.WithLabelValues(gw.group, gw.cfg.Name).Set(0)
	s.m.gatewayDowns.WithLabelValues(gw.group, gw.cfg.Name, reason).Inc()
}

// setUpLocked puts gw back into rotation.
func (s *Server) setUpLocked(gw *gatewayState) {
	gw.up.Store(true)
	gw.gen.Add(1)
	gw.fails = 0
	gw.callFails.Store(0)
	gw.heldUntil = time.Time{}
	if gw.holdDown != nil {
		gw.holdDown.Stop()
		gw.holdDown = nil
	}
	s.m.gatewayUp.WithLabelValues(gw.group, gw.cfg.Name).Set(1)
}

func (s *Server) logGatewayUp(gw *gatewayState, reason string) {
	s.log.Info().Str("group", gw.group).Str("gateway", gw.cfg.Name).Str("reason", reason).Msg("gateway up")
}

// stopHoldDowns cancels the pending hold-down timers, so none fires once
// Run has returned.
func (s *Server) stopHoldDowns() {
	for _, g := range s.groups {
		for _, gw := range g.gateways {
			gw.mu.Lock()
			if gw.holdDown != nil {
				gw.holdDown.Stop()
				gw.holdDown = nil
			}
			gw.mu.Unlock()
		}
	}
}
