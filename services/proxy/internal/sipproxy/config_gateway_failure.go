package sipproxy

import (
	"fmt"
	"slices"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Defaults of the gateway failure policy (Config.GatewayFailure).
const (
	DefaultGatewayDownAfter     = 1
	DefaultGatewayHoldDown      = 30 * time.Second
	DefaultGatewayMaxRetryAfter = 5 * time.Minute
	minGatewayHoldDown          = 100 * time.Millisecond
	// maxGatewayDownAfter keeps the count of consecutive failures, an
	// int32, from wrapping: once wrapped, every failure would take the
	// gateway out.
	maxGatewayDownAfter = 1 << 20
)

// defaultGatewayFailureCodes counts 503 alone: RFC 3398 maps the ISDN
// causes of a trunk that cannot take calls (no circuit, network out of
// order, temporary failure, congestion) to it, while a 408 or a 500 from a
// PSTN gateway often reports one call's fate (cause 18, no user
// responding, is a 408).
var defaultGatewayFailureCodes = []int{sip.StatusServiceUnavailable}

// GatewayFailure takes a gateway out of rotation as soon as calls to it
// fail, as Kamailio's dispatcher does with ds_mark_dst in a failure route,
// instead of waiting for the OPTIONS probes: the next calls go to the other
// gateways of the group rather than each waiting for the same timeout. The
// call that failed still fails over as before.
//
// A call fails on its gateway when the branch got no response at all
// (Timer B, branch_timeout, or Timer C before anything came back), when
// its transport failed, or when it was answered with one of Codes. Any
// other answer (a 2xx, 486, 404, or ringing until Timer C) shows the
// gateway alive and restarts the count; a call the caller cancels counts
// neither way. A 503 with Retry-After takes the gateway out at once, for
// that long at least, whatever DownAfter and Codes say: RFC 3261 21.5.4
// forbids sending that server any request meanwhile.
//
// With probing on, the first successful OPTIONS probes (probe.up_after)
// bring the gateway back; with probing off, HoldDown does.
type GatewayFailure struct {
	// Disabled leaves a gateway's state to the OPTIONS probes alone.
	Disabled bool `yaml:"disabled"`
	// DownAfter consecutive failed calls take the gateway out (default 1).
	DownAfter int `yaml:"down_after"`
	// Codes are the final responses that count as a failure of the
	// gateway itself (default [503]). Only 408 and 5xx qualify, the codes
	// after which a call fails over: a 4xx or 6xx speaks of the callee. In
	// a group's block an empty list ([]) counts none.
	Codes []int `yaml:"codes"`
	// HoldDown is how long a gateway taken out by a failed call stays out
	// when probing is disabled (default 30s, at least 100ms).
	HoldDown time.Duration `yaml:"hold_down"`
	// MaxRetryAfter caps how long a 503's Retry-After keeps the gateway
	// out (default 5m, at least 1s).
	MaxRetryAfter time.Duration `yaml:"max_retry_after"`
}

// withDefaults fills the unset fields of the global policy.
func (f GatewayFailure) withDefaults() GatewayFailure {
	setDefault(&f.DownAfter, DefaultGatewayDownAfter)
	setDefault(&f.HoldDown, DefaultGatewayHoldDown)
	setDefault(&f.MaxRetryAfter, DefaultGatewayMaxRetryAfter)
	if f.Codes == nil {
		f.Codes = defaultGatewayFailureCodes
	}
	return f
}

// over returns a group's policy: its own fields, the global ones where it
// set none. Codes is nil when unset; an explicit empty list stays empty.
func (f GatewayFailure) over(global GatewayFailure) GatewayFailure {
	f.Disabled = f.Disabled || global.Disabled
	setDefault(&f.DownAfter, global.DownAfter)
	setDefault(&f.HoldDown, global.HoldDown)
	setDefault(&f.MaxRetryAfter, global.MaxRetryAfter)
	if f.Codes == nil {
		f.Codes = global.Codes
	}
	return f
}

// validate names the fields of f that cannot work. Zero fields are
// accepted: in a group they inherit, and the global policy has its
// defaults by now.
func (f GatewayFailure) validate(field string, bad func(field, format string, args ...any)) {
	if f.DownAfter < 0 || f.DownAfter > maxGatewayDownAfter {
		bad(field+".down_after", "%d outside 1..%d", f.DownAfter, maxGatewayDownAfter)
	}
	if f.HoldDown < 0 || (f.HoldDown > 0 && f.HoldDown < minGatewayHoldDown) {
		bad(field+".hold_down", "%v below %v", f.HoldDown, minGatewayHoldDown)
	}
	if f.MaxRetryAfter < 0 || (f.MaxRetryAfter > 0 && f.MaxRetryAfter < time.Second) {
		bad(field+".max_retry_after", "%v below 1s (Retry-After counts whole seconds)", f.MaxRetryAfter)
	}
	for i, code := range f.Codes {
		name := fmt.Sprintf("%s.codes[%d]", field, i)
		if !gatewayFaultCode(code) {
			bad(name, "%d is not 408 or 5xx: it speaks of the callee, not the gateway", code)
		}
		if slices.Index(f.Codes, code) < i {
			bad(name, "duplicate %d", code)
		}
	}
}

// gatewayFaultCode reports the final codes that may count against a
// gateway: those after which a call fails over (failoverAllowed).
func gatewayFaultCode(code int) bool {
	return code == sip.StatusRequestTimeout || (code >= 500 && code < 600)
}
