package sipproxy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
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
	errTooManyContacts  = errors.New("more contacts than registrar.max_contacts")
	errBranchTimeout    = errors.New("branch sent no response")
	errInviteTimeout    = errors.New("timer c expired while ringing")
	errBlockedAgent     = errors.New("user agent blocklisted")
	errUnsupportedURI   = errors.New("unsupported uri scheme")
	errNotAllowed       = errors.New("method not allowed here")
	errVersion          = errors.New("sip version not supported")
	errMediaDisabled    = errors.New("media services need the media fleet")
	errNoOffer          = errors.New("no sdp offer to answer")
	errForeignBody      = errors.New("body is not sdp")
	errSessionNotFound  = errors.New("no live node holds the session")
	// errEarlyAnswerRefused: the node refused the answer an in-dialog
	// offer got in a reliable provisional response (RFC 3262).
	errEarlyAnswerRefused = errors.New("node refused the early answer")
)

// errNextHopUnreachable wraps a branch's transport failure: answered 500,
// where a failure of our own (a store or fleet we need) is a 503.
var errNextHopUnreachable = errors.New("next hop unreachable")

// registerConflictRetryAfter is the Retry-After of the 500 answering a
// REGISTER that lost every compare-and-set to concurrent registrations of
// its AOR: those are over within a fraction of a second.
const registerConflictRetryAfter = time.Second

// failure is how the proxy answers an error: status, reason phrase, metric
// reason, and the extra headers the status needs.
type failure struct {
	code   int
	phrase string
	reason string
	// retryAfter, when set, goes out as Retry-After (whole seconds).
	retryAfter time.Duration
	// warning, when set, is a Warning header's code and text (RFC 3261 20.43).
	warning string
	// registrarError, when set, goes out as P-Registrar-Error: the
	// registrar's reason for refusing a REGISTER.
	registrarError string
}

// Reasons the registrar's refusals give in P-Registrar-Error. Kamailio's
// registrar sends that header on every refusal (registrar module, reply.c)
// with a short text, and operators and phones' logs read it to tell one
// 400 or 503 from another; these follow its wording where it has one.
const (
	regErrTooManyContacts = "Too many registered contacts"
	regErrOutOfOrder      = "Out of order CSeq"
	regErrTooBrief        = "Expires below the minimum"
	regErrStarExpires     = "Invalid expires with * contact"
	regErrStarWithOthers  = "* contact among others"
	regErrContactParse    = "Contact parse error"
	regErrInvalidQ        = "Invalid q parameter"
	regErrUnavailable     = "Location service unavailable"
	regErrConflict        = "Concurrent registrations, retry"
	regErrTooLarge        = "Registration too large to store"
	regErrDomain          = "Domain not served here"
	regErrIdentity        = "AOR not of the authenticated user"
	regErrDigestURI       = "Digest URI not the Request-URI"
	regErrMalformed       = "Malformed request"
	regErrInternal        = "Internal registrar error"
)

// registrarError is the registrar's refusal of a REGISTER: the error that
// sets the status, with the reason for P-Registrar-Error. Where one error
// stands for several refusals (errMalformed), the registrar names the
// reason where it refuses; otherwise registrarReason derives it.
type registrarError struct {
	reason string
	err    error
}

func (e *registrarError) Error() string { return e.err.Error() }
func (e *registrarError) Unwrap() error { return e.err }

// registrarRefusal marks err as the registrar's refusal for reason.
func registrarRefusal(reason string, err error) error {
	return &registrarError{reason: reason, err: err}
}

// asRegistrarRefusal marks any error of the registrar as its refusal,
// keeping the reason of one already marked.
func asRegistrarRefusal(err error) error {
	var re *registrarError
	if errors.As(err, &re) {
		return err
	}
	return registrarRefusal(registrarReason(err), err)
}

// registrarReason is the P-Registrar-Error reason of a registrar error
// marked without one.
func registrarReason(err error) string {
	var brief *intervalTooBriefError
	switch {
	case errors.As(err, &brief):
		return regErrTooBrief
	case errors.Is(err, errTooManyContacts):
		return regErrTooManyContacts
	case errors.Is(err, location.ErrUnavailable):
		return regErrUnavailable
	case errors.Is(err, location.ErrConflict):
		return regErrConflict
	case errors.Is(err, location.ErrTooLarge):
		return regErrTooLarge
	case errors.Is(err, errNoRoute):
		return regErrDomain
	case errors.Is(err, errIdentityMismatch):
		return regErrIdentity
	case errors.Is(err, errMalformed):
		return regErrMalformed
	}
	return regErrInternal
}

// intervalTooBriefError carries the Min-Expires value for the 423 response.
type intervalTooBriefError struct{ min int }

func (e *intervalTooBriefError) Error() string {
	return fmt.Sprintf("expires below minimum %d", e.min)
}

// classify maps an error onto the SIP status, reason phrase, metric reason
// and headers: the one place the proxy picks a status for its own answers.
func (s *Server) classify(err error) failure {
	f := classifyStatus(err)
	var re *registrarError
	if errors.As(err, &re) {
		f.registrarError = re.reason
	}
	switch {
	case f.reason == "draining":
		f.retryAfter = s.cfg.DrainRetryAfter
	case f.reason == "location_conflict":
		f.retryAfter = registerConflictRetryAfter
	case f.reason == "too_many_contacts":
		// The same REGISTER fails again however long the phone waits.
	case f.code == sip.StatusServiceUnavailable && s.media != nil:
		f.retryAfter = s.media.RetryAfter
	case f.code == sip.StatusServiceUnavailable:
		f.retryAfter = s.cfg.DrainRetryAfter
	}
	return f
}

func classifyStatus(err error) failure {
	if f, ok := classifyMedia(err); ok {
		return f
	}
	code, phrase, reason := classifySIP(err)
	return failure{code: code, phrase: phrase, reason: reason}
}

// classifyMedia maps what the media fleet and the bus said. A node's
// refusal of the SDP itself is the caller's problem (488); a fleet that
// cannot take the call or a bus that is away is ours (503, retry later).
func classifyMedia(err error) (failure, bool) {
	unavailable := func(reason string) (failure, bool) {
		return failure{code: sip.StatusServiceUnavailable, phrase: "Service Unavailable", reason: reason}, true
	}
	var se *bus.StatusError
	switch {
	case errors.Is(err, fleet.ErrNoMediaCapacity):
		return unavailable("no_media_capacity")
	case errors.Is(err, bus.ErrUnavailable):
		return unavailable("bus_unavailable")
	case errors.Is(err, bus.ErrTimeout), errors.Is(err, bus.ErrNoResponders), errors.Is(err, bus.ErrBadReply):
		return unavailable("media_unreachable")
	case errors.Is(err, errMediaDisabled):
		return unavailable("media_disabled")
	case errors.Is(err, errNoOffer), errors.Is(err, errForeignBody):
		return failure{code: sip.StatusNotAcceptableHere, phrase: "Not Acceptable Here", reason: "no_offer"}, true
	case errors.Is(err, errEarlyAnswerRefused):
		return failure{code: sip.StatusNotAcceptableHere, phrase: "Not Acceptable Here", reason: "bad_sdp"}, true
	case errors.Is(err, errSessionNotFound):
		return failure{code: sip.StatusCallTransactionDoesNotExists, phrase: "Call/Transaction Does Not Exist", reason: "unknown_session"}, true
	case errors.As(err, &se):
		switch se.Status {
		case callgridv1.Status_STATUS_BAD_SDP:
			return failure{code: sip.StatusNotAcceptableHere, phrase: "Not Acceptable Here", reason: "bad_sdp"}, true
		case callgridv1.Status_STATUS_UNSUPPORTED_CODEC:
			return failure{code: sip.StatusNotAcceptableHere, phrase: "Not Acceptable Here", reason: "unsupported_codec",
				warning: `305 callgrid "Incompatible media format"`}, true
		case callgridv1.Status_STATUS_UNKNOWN_SESSION:
			return failure{code: sip.StatusCallTransactionDoesNotExists, phrase: "Call/Transaction Does Not Exist", reason: "unknown_session"}, true
		case callgridv1.Status_STATUS_FULL, callgridv1.Status_STATUS_DRAINING:
			return unavailable("no_media_capacity")
		default:
			return failure{code: sip.StatusInternalServerError, phrase: "Server Internal Error", reason: "media_error"}, true
		}
	}
	return failure{}, false
}

// classifySIP maps the proxy's own errors.
func classifySIP(err error) (code int, phrase string, reason string) {
	var (
		brief *intervalTooBriefError
		ext   *badExtensionError
	)
	switch {
	case errors.As(err, &brief):
		return sip.StatusIntervalToBrief, "Interval Too Brief", "interval_too_brief"
	case errors.As(err, &ext):
		return sip.StatusBadExtension, "Bad Extension", "bad_extension"
	case errors.Is(err, errDraining):
		return sip.StatusServiceUnavailable, "Service Unavailable", "draining"
	case errors.Is(err, location.ErrUnavailable):
		return sip.StatusServiceUnavailable, "Service Unavailable", "location_unavailable"
	case errors.Is(err, location.ErrConflict):
		// Our registrar's failure, not an overload (a 503 would steer the
		// phone to another server): it may retry shortly.
		return sip.StatusInternalServerError, "Server Internal Error", "location_conflict"
	case errors.Is(err, location.ErrTooLarge):
		// No retry can store it: the AOR or its contacts are too long.
		return sip.StatusRequestEntityTooLarge, "Request Entity Too Large", "registration_too_large"
	case errors.Is(err, errTooManyContacts):
		// Kamailio's status and, capitalised, its words: its registrar
		// answers 503 "Service Unavailable" with "P-Registrar-Error: Too
		// many registered contacts" (registrar module, reply.c, R_TOO_MANY)
		// and Retry-After only if retry_after is set, 0 by default. Here
		// the reason is also the phrase, which phones show where they do
		// not show that header (sent too: registrarReason); never a
		// Retry-After (classify).
		return sip.StatusServiceUnavailable, "Too Many Registered Contacts", "too_many_contacts"
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
	case errors.Is(err, errNextHopUnreachable):
		return sip.StatusInternalServerError, "Server Internal Error", "transport"
	case errors.Is(err, sip.ErrTransactionTransport):
		return sip.StatusServiceUnavailable, "Service Unavailable", "transport"
	}
	return sip.StatusInternalServerError, "Server Internal Error", "internal"
}

// badExtensionError carries the Proxy-Require option tags a 420 lists in
// its Unsupported header.
type badExtensionError struct{ tags []string }

func (e *badExtensionError) Error() string {
	return fmt.Sprintf("proxy-require %s not supported", strings.Join(e.tags, ", "))
}

func asIntervalTooBrief(err error, target **intervalTooBriefError) bool {
	return errors.As(err, target)
}
