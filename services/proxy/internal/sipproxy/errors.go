package sipproxy

import (
	"errors"
	"fmt"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/services/proxy/internal/location"
)

// Errors the request path returns; classify turns each into a SIP status and
// a metric reason, so handlers never pick status codes inline.
var (
	errDraining         = errors.New("proxy is draining")
	errNoRoute          = errors.New("no route for request-uri")
	errNoGateway        = errors.New("no gateway of the group is up")
	errLoop             = errors.New("request loops through this proxy")
	errTooManyHops      = errors.New("max-forwards exhausted")
	errRelayDenied      = errors.New("foreign domain from untrusted source")
	errIdentityMismatch = errors.New("authenticated user differs from from-user")
	errMalformed        = errors.New("malformed request")
	errNotOurRoute      = errors.New("in-dialog request without our route")
	errNoTransaction    = errors.New("no transaction to cancel")
	errBranchTimeout    = errors.New("branch sent no response")
	errInviteTimeout    = errors.New("timer c expired while ringing")
	errBlockedAgent     = errors.New("user agent blocklisted")
	errUnsupportedURI   = errors.New("unsupported uri scheme")
	errNotAllowed       = errors.New("method not allowed here")
	errVersion          = errors.New("sip version not supported")
)

// intervalTooBriefError carries the Min-Expires value for the 423 response.
type intervalTooBriefError struct{ min int }

func (e *intervalTooBriefError) Error() string {
	return fmt.Sprintf("expires below minimum %d", e.min)
}

// classify maps an error onto the SIP status, reason phrase and metric reason.
func classify(err error) (code int, phrase string, reason string) {
	var brief *intervalTooBriefError
	switch {
	case errors.As(err, &brief):
		return sip.StatusIntervalToBrief, "Interval Too Brief", "interval_too_brief"
	case errors.Is(err, errDraining):
		return sip.StatusServiceUnavailable, "Service Unavailable", "draining"
	case errors.Is(err, location.ErrUnavailable):
		return sip.StatusServiceUnavailable, "Service Unavailable", "location_unavailable"
	case errors.Is(err, errNoRoute):
		return sip.StatusNotFound, "Not Found", "no_route"
	case errors.Is(err, errNoGateway):
		return sip.StatusServiceUnavailable, "Service Unavailable", "no_gateway"
	case errors.Is(err, errLoop):
		return sip.StatusLoopDetected, "Loop Detected", "loop"
	case errors.Is(err, errTooManyHops):
		return sip.StatusTooManyHops, "Too Many Hops", "too_many_hops"
	case errors.Is(err, errRelayDenied):
		return sip.StatusForbidden, "Relaying Forbidden", "relay_denied"
	case errors.Is(err, errIdentityMismatch):
		return sip.StatusForbidden, "Forbidden", "identity_mismatch"
	case errors.Is(err, errBlockedAgent):
		return sip.StatusForbidden, "Forbidden", "blocked_user_agent"
	case errors.Is(err, errMalformed):
		return sip.StatusBadRequest, "Bad Request", "malformed"
	case errors.Is(err, errNotOurRoute):
		return sip.StatusNotFound, "Not Here", "not_our_route"
	case errors.Is(err, errNoTransaction):
		return sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", "no_transaction"
	case errors.Is(err, errUnsupportedURI):
		return 416, "Unsupported URI Scheme", "unsupported_uri"
	case errors.Is(err, errVersion):
		return sip.StatusVersionNotSupported, "Version Not Supported", "bad_version"
	case errors.Is(err, errNotAllowed):
		return sip.StatusMethodNotAllowed, "Method Not Allowed", "method_not_allowed"
	case errors.Is(err, errBranchTimeout), errors.Is(err, errInviteTimeout), errors.Is(err, sip.ErrTransactionTimeout):
		return sip.StatusRequestTimeout, "Request Timeout", "timeout"
	case errors.Is(err, sip.ErrUDPMTUCongestion):
		return sip.StatusMessageTooLarge, "Message Too Large", "too_large"
	case errors.Is(err, sip.ErrTransactionTransport):
		return sip.StatusServiceUnavailable, "Service Unavailable", "transport"
	}
	return sip.StatusInternalServerError, "Server Internal Error", "internal"
}

func asIntervalTooBrief(err error, target **intervalTooBriefError) bool {
	return errors.As(err, target)
}
