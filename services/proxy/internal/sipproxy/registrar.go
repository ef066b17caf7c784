package sipproxy

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/services/proxy/internal/location"
)

// register implements the registrar (RFC 3261 10.3) for local domains. Its
// refusals say why in P-Registrar-Error.
func (s *Server) register(c *call) error {
	if err := s.registerBindings(c); err != nil {
		return asRegistrarRefusal(err)
	}
	return nil
}

// registerBindings applies a REGISTER. Every Contact is checked before any
// binding changes, so a refused REGISTER leaves the bindings as they were
// (steps 6 and 7 commit all or nothing).
func (s *Server) registerBindings(c *call) error {
	req := c.req
	out := s.auth.check(req, false)
	if !out.ok {
		s.challenge(c, false, out)
		return nil
	}
	to := req.To()
	// Step 5: the To URI is the AOR, and one of a domain we do not serve
	// gets 404 rather than a binding filed under our canonical domain.
	if !s.self.isLocalDomain(to.Address.Host) {
		return fmt.Errorf("register for domain %q: %w", to.Address.Host, errNoRoute)
	}
	if !s.ownAOR(to.Address, out.user) {
		return fmt.Errorf("register %q as %q: %w", to.Address.User, out.user, errIdentityMismatch)
	}
	aor := s.self.aor(to.Address)
	c.log = c.logger().With().Str("aor", aor).Logger()

	contacts, err := registerContacts(req)
	if err != nil {
		return err
	}
	wildcard, err := wildcardContact(req, contacts)
	if err != nil {
		return err
	}
	var updates []bindingUpdate
	if !wildcard {
		if updates, err = s.bindingUpdates(req, contacts); err != nil {
			return err
		}
	}

	now := s.now()
	binding := s.newBinding(req, aor, now)
	var repeated bool
	ctx, cancel := context.WithTimeout(context.Background(), defaultConnectTimeout)
	defer cancel()
	// The whole check-and-apply runs inside the store's atomic update, on
	// the bindings as they are when it writes: a REGISTER racing this one
	// through any replica is ordered before or after it, never between.
	query := !wildcard && len(updates) == 0
	bindings, err := s.loc.Update(ctx, aor, func(live []location.Binding) ([]location.Binding, error) {
		repeated = false
		if query {
			// No Contact: the REGISTER only asks for the bindings (step 8)
			// and changes nothing, so no order applies and nothing is written.
			return nil, location.ErrUnchanged
		}
		switch registerOrder(live, binding.CallID, binding.CSeq) {
		case orderOlder:
			// An older REGISTER overtaking a newer one must not undo it, nor
			// evict what the newer one bound: the update is aborted and the
			// request fails (steps 6 and 7).
			return nil, registrarRefusal(regErrOutOfOrder,
				fmt.Errorf("register cseq %d not above a binding's of call-id %q: %w", binding.CSeq, binding.CallID, errMalformed))
		case orderRepeated:
			// The same request again, arriving after its transaction was
			// forgotten: it was applied once, so answer with what is bound.
			repeated = true
			return nil, location.ErrUnchanged
		}
		if wildcard {
			return nil, nil
		}
		return s.applyBindingUpdates(live, updates, binding), nil
	})
	if err != nil {
		return fmt.Errorf("register %s: %w", aor, err)
	}
	switch {
	case query:
		c.logger().Debug().Int("contacts", len(bindings)).Msg("bindings queried")
	case repeated:
		c.logger().Debug().Msg("repeated register answered with the current bindings")
	case wildcard:
		c.logger().Info().Msg("unregistered all contacts")
	default:
		c.logger().Debug().Int("contacts", len(bindings)).Msg("registered")
	}
	s.replyBindings(c, bindings, now)
	return nil
}

// bindingUpdates checks each Contact of a REGISTER, none of them "*", and
// returns what each asks for, marked by markBinding: an expiry in the
// allowed range, and no more bindings than max_contacts.
func (s *Server) bindingUpdates(req *sip.Request, contacts []*sip.ContactHeader) ([]bindingUpdate, error) {
	updates := make([]bindingUpdate, 0, len(contacts))
	// Read once: finding a header walks them all, and a REGISTER may
	// carry hundreds of Contacts.
	header := expiresHeader(req)
	for _, ct := range contacts {
		expires := s.grantedExpires(ct, header)
		if expires > 0 && expires < s.cfg.Registrar.MinExpires {
			return nil, &intervalTooBriefError{min: s.cfg.Registrar.MinExpires}
		}
		key := contactKey(ct)
		q, err := contactQ(ct)
		if err != nil {
			return nil, registrarRefusal(regErrInvalidQ, fmt.Errorf("contact %s: %w: %w", key, err, errMalformed))
		}
		updates = append(updates, bindingUpdate{contact: key, form: parseContactForm(key), expires: expires, q: q})
	}
	if markBinding(updates, s.cfg.Registrar.MaxContacts) > s.cfg.Registrar.MaxContacts {
		return nil, fmt.Errorf("register more than %d contacts: %w", s.cfg.Registrar.MaxContacts, errTooManyContacts)
	}
	return updates, nil
}

// newBinding is the binding a REGISTER makes, but for its contact and
// expiry, which each Contact sets.
func (s *Server) newBinding(req *sip.Request, aor string, now time.Time) location.Binding {
	b := location.Binding{
		AOR:       aor,
		Received:  req.Source(),
		Transport: strings.ToUpper(req.Transport()),
		Holder:    s.holderFor(req.Transport()),
		CallID:    req.CallID().Value(),
		CSeq:      req.CSeq().SeqNo,
		UpdatedAt: now,
	}
	if h := req.GetHeader("User-Agent"); h != nil {
		b.UserAgent = h.Value()
	}
	return b
}

// applyBindingUpdates returns live with the REGISTER's contacts applied:
// an expiry of 0 removes a contact, any other adds or refreshes it. RFC 3261
// leaves the limit to the registrar. Kamailio refuses any REGISTER that
// would take the AOR past max_contacts; here only one whose own contacts
// exceed it is refused (register), and one that fits makes room for the
// contacts it newly binds by evicting the AOR's other bindings, least
// recently registered first. Refusing it would lock a phone whose address
// changed out until its stale bindings expire, up to max_expires later; the
// price is that a phone registering rarely can be pushed out by others
// registering often, which a max_contacts above the devices a user has
// avoids. The REGISTER's own bindings are never the ones evicted, whatever
// the clocks of the replicas that wrote the others, and it evicts no more
// bindings than it adds: a refresh or a removal evicts none, even when the
// AOR holds more than this replica's max_contacts (written under a higher
// limit, by this replica before a restart or by another configured higher),
// so replicas that disagree on the limit do not cut each other's bindings
// back on every REGISTER. A binding written by a newer REGISTER of the same
// Call-ID is never among the others: registerOrder refuses the request.
// updates are marked by markBinding.
func (s *Server) applyBindingUpdates(live []location.Binding, updates []bindingUpdate, made location.Binding) []location.Binding {
	uris := contactURIs{}
	// Bound before this REGISTER: own contacts equal to one (RFC 3261
	// 19.1.4) refresh it, however the phone writes them now. Every
	// contact, of any expiry, takes the place of the bindings it equals.
	others := make([]location.Binding, 0, len(live))
	for _, l := range live {
		if !equalsAny(uris.form(l.Contact), updates) {
			others = append(others, l)
		}
	}
	// A contact listed twice takes its last expiry, as if refreshed. One
	// written otherwise replaces the binding, which then keeps the Contact
	// as the phone last wrote it: the last of the equal ones binds
	// (markBinding).
	var own []location.Binding
	var ownForms []*contactForm
	for _, u := range updates {
		if !u.binds {
			continue
		}
		b := made
		b.Contact = u.contact
		b.Q = u.q
		b.Expires = made.UpdatedAt.Add(time.Duration(u.expires) * time.Second)
		own = append(own, b)
		ownForms = append(ownForms, u.form)
	}
	// Each binding bound before refreshes one own contact at most: 19.1.4
	// equality is not transitive (a parameter in one URI only is ignored),
	// so two contacts that differ can both equal one binding, and then one
	// of them is new. Counted otherwise, a phone could split its bindings
	// past max_contacts with refreshes.
	refreshed := make([]bool, len(live))
	added := 0
	for _, f := range ownForms {
		match := -1
		for i, l := range live {
			if !refreshed[i] && sameContact(uris.form(l.Contact), f) {
				match = i
				break
			}
		}
		if match < 0 {
			added++
			continue
		}
		refreshed[match] = true
	}
	// register refused more own contacts than max_contacts, so the excess
	// never exceeds len(others).
	excess := len(own) + len(others) - s.cfg.Registrar.MaxContacts
	evict := min(max(excess, 0), added)
	location.SortNewestFirst(others)
	next := append(own, others[:len(others)-evict]...)
	location.SortNewestFirst(next)
	return next
}

// markBinding marks the updates that leave a binding: each contact once,
// by URI equality, the last of those equal to it, unless its expiry is 0.
// It returns how many, but stops past limit, the most a REGISTER may bind,
// leaving the rest unmarked: every contact that binds is compared with
// every later one, and the largest message holds hundreds of contacts.
func markBinding(updates []bindingUpdate, limit int) int {
	n := 0
	for i := range updates {
		u := &updates[i]
		u.binds = u.expires > 0 && !equalsAny(u.form, updates[i+1:])
		if u.binds {
			if n++; n > limit {
				return n
			}
		}
	}
	return n
}

// equalsAny reports whether f is the same URI as any update's contact.
func equalsAny(f *contactForm, updates []bindingUpdate) bool {
	for i := range updates {
		if sameContact(f, updates[i].form) {
			return true
		}
	}
	return false
}

// bindingUpdate is one Contact of a REGISTER, checked and not yet applied.
type bindingUpdate struct {
	contact string
	form    *contactForm
	expires int
	// q is the contact's q parameter, unset without one.
	q location.QValue
	// binds: no later contact of the REGISTER equals this one, and its
	// expiry is not 0 (markBinding).
	binds bool
}

// wildcardContact reports whether the REGISTER removes all bindings. "*"
// is only valid alone and with Expires: 0 (RFC 3261 10.3 step 6).
func wildcardContact(req *sip.Request, contacts []*sip.ContactHeader) (bool, error) {
	for _, ct := range contacts {
		if !ct.Address.Wildcard {
			continue
		}
		if len(contacts) > 1 {
			return false, registrarRefusal(regErrStarWithOthers, fmt.Errorf("wildcard contact among others: %w", errMalformed))
		}
		if expiresHeader(req) != 0 {
			return false, registrarRefusal(regErrStarExpires, fmt.Errorf("wildcard contact needs expires 0: %w", errMalformed))
		}
		return true, nil
	}
	return false, nil
}

// registerOrdering says how a REGISTER stands to the bindings of its AOR.
type registerOrdering int

const (
	// orderNew: no binding has the request's Call-ID with a CSeq at or
	// above the request's.
	orderNew registerOrdering = iota
	// orderRepeated: a binding was made by this very request.
	orderRepeated
	// orderOlder: a binding was made by a later request.
	orderOlder
)

// registerOrder compares the request's Call-ID and CSeq with those of all
// the AOR's bindings, not only those of its contacts. RFC 3261 10.3 step 7
// compares them per contact, but a UA uses one Call-ID for all its
// registrations to a registrar, raises the CSeq by one for each, and sends
// the next only once the previous one is answered or timed out (10.2): a
// REGISTER below any binding of its Call-ID was overtaken by one its UA sent
// after giving up on it, and applying any of it (a contact the UA has
// since moved from, a removal, an eviction to make room) would leave what
// the UA no longer means. Equal is this request again: a UA never sends
// two REGISTERs with one Call-ID and CSeq.
func registerOrder(current []location.Binding, callID string, seq uint32) registerOrdering {
	order := orderNew
	for _, b := range current {
		if b.CallID != callID || b.CSeq < seq {
			continue
		}
		if b.CSeq > seq {
			return orderOlder
		}
		order = orderRepeated
	}
	return order
}

// replyBindings answers 200 with every current binding and the seconds it
// has left (RFC 3261 10.3 step 8).
func (s *Server) replyBindings(c *call, bindings []location.Binding, now time.Time) {
	hdrs := make([]sip.Header, 0, len(bindings))
	for _, b := range bindings {
		var uri sip.Uri
		if err := sip.ParseUri(b.Contact, &uri); err != nil {
			continue
		}
		left := int(b.Expires.Sub(now).Round(time.Second).Seconds())
		params := sip.HeaderParams{{K: "expires", V: strconv.Itoa(max(left, 0))}}
		if b.Q.IsSet() {
			// Listed back as registered: a contact without q keeps none.
			params = append(params, sip.HeaderKV{K: "q", V: b.Q.String()})
		}
		hdrs = append(hdrs, &sip.ContactHeader{Address: uri, Params: params})
	}
	s.reply(c, sip.StatusOK, "OK", hdrs...)
}

func registerContacts(req *sip.Request) ([]*sip.ContactHeader, error) {
	var out []*sip.ContactHeader
	for _, h := range req.GetHeaders("Contact") {
		ct, ok := h.(*sip.ContactHeader)
		if !ok {
			return nil, registrarRefusal(regErrContactParse, fmt.Errorf("unparsable contact: %w", errMalformed))
		}
		out = append(out, ct)
	}
	return out, nil
}

// contactQ reads a Contact's q parameter (RFC 3261 20.10). A malformed
// one refuses the REGISTER with 400, as Kamailio's registrar does ("Invalid
// q parameter"): ranking it 1.0 instead would have the phone ring first
// where its user asked for it to ring last, with nothing telling anyone.
func contactQ(ct *sip.ContactHeader) (location.QValue, error) {
	v, ok := ct.Params.Get("q")
	if !ok {
		return 0, nil
	}
	return location.ParseQ(v)
}

// grantedExpires applies RFC 3261 10.3 step 7: the contact's expires
// parameter, else header, the REGISTER's Expires (expiresHeader), else the
// default; capped at the maximum. A malformed value in either place is not
// skipped for the next: it counts as 3600 seconds (RFC 3261 20.10, 20.19),
// then capped as any.
func (s *Server) grantedExpires(ct *sip.ContactHeader, header int) int {
	expires := header
	if v, ok := ct.Params.Get("expires"); ok {
		expires = deltaSeconds(v)
	}
	if expires < 0 {
		expires = s.cfg.Registrar.DefaultExpires
	}
	return min(expires, s.cfg.Registrar.MaxExpires)
}

// expiresHeader returns the Expires header's seconds (see deltaSeconds),
// or -1 without one.
func expiresHeader(req *sip.Request) int {
	h := req.GetHeader("Expires")
	if h == nil {
		return -1
	}
	return deltaSeconds(strings.TrimSpace(h.Value()))
}

// malformedExpires is what a malformed expiry counts as (RFC 3261 20.10,
// 20.19): an RFC 2543 phone may still send an absolute date there.
const malformedExpires = 3600

// maxDeltaSeconds is the largest expiry RFC 3261 defines, 2**32-1; a
// longer one may be taken as it (10.2.1.1), and is capped anyway.
const maxDeltaSeconds = 1<<32 - 1

// deltaSeconds reads delta-seconds (1*DIGIT, RFC 3261 25.1): a longer
// number than maxDeltaSeconds is maxDeltaSeconds, anything else that is
// not digits alone (a sign, a date, nothing) is malformedExpires.
func deltaSeconds(v string) int {
	if v == "" {
		return malformedExpires
	}
	n := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return malformedExpires
		}
		n = min(n*10+int(c-'0'), maxDeltaSeconds)
	}
	return n
}
