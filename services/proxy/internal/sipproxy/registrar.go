package sipproxy

import (
	"context"
	"fmt"
	"slices"
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
		updates = make([]bindingUpdate, 0, len(contacts))
		for _, ct := range contacts {
			expires := s.grantedExpires(req, ct)
			if expires > 0 && expires < s.cfg.Registrar.MinExpires {
				return &intervalTooBriefError{min: s.cfg.Registrar.MinExpires}
			}
			updates = append(updates, bindingUpdate{contact: contactKey(ct), expires: expires})
		}
	}
	if n := contactsKept(updates, contactURIs{}); n > s.cfg.Registrar.MaxContacts {
		return fmt.Errorf("register %d contacts for %s, %d allowed: %w", n, aor, s.cfg.Registrar.MaxContacts, errTooManyContacts)
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
func (s *Server) applyBindingUpdates(live []location.Binding, updates []bindingUpdate, made location.Binding) []location.Binding {
	uris := contactURIs{}
	// Bound before this REGISTER: own contacts equal to one (RFC 3261
	// 19.1.4) refresh it, however the phone writes them now.
	bound := slices.Clone(live)
	others := live
	var own []location.Binding
	for _, u := range updates {
		// A contact listed twice takes its last expiry, as if refreshed.
		// One written otherwise replaces the binding, which then keeps the
		// Contact as the phone last wrote it.
		sameContact := func(b location.Binding) bool { return uris.same(b.Contact, u.contact) }
		others = slices.DeleteFunc(others, sameContact)
		own = slices.DeleteFunc(own, sameContact)
		if u.expires == 0 {
			continue
		}
		b := made
		b.Contact = u.contact
		b.Expires = made.UpdatedAt.Add(time.Duration(u.expires) * time.Second)
		own = append(own, b)
	}
	// Each binding bound before refreshes one own contact at most: 19.1.4
	// equality is not transitive (a parameter in one URI only is ignored),
	// so two contacts that differ can both equal one binding, and then one
	// of them is new. Counted otherwise, a phone could split its bindings
	// past max_contacts with refreshes.
	refreshed := make([]bool, len(bound))
	added := 0
	for _, b := range own {
		match := -1
		for i, l := range bound {
			if !refreshed[i] && uris.same(l.Contact, b.Contact) {
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

// contactsKept is how many bindings a REGISTER's contacts leave: each
// contact once, by URI equality, unless its last expiry is 0.
func contactsKept(updates []bindingUpdate, uris contactURIs) int {
	n := 0
	for i, u := range updates {
		later := func(v bindingUpdate) bool { return uris.same(u.contact, v.contact) }
		if u.expires > 0 && !slices.ContainsFunc(updates[i+1:], later) {
			n++
		}
	}
	return n
}

// bindingUpdate is one Contact of a REGISTER, checked and not yet applied.
type bindingUpdate struct {
	contact string
	expires int
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
		hdrs = append(hdrs, &sip.ContactHeader{Address: uri, Params: sip.HeaderParams{{K: "expires", V: strconv.Itoa(max(left, 0))}}})
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

// grantedExpires applies RFC 3261 10.3 step 7: the contact's expires
// parameter, else the Expires header, else the default; capped at the maximum.
func (s *Server) grantedExpires(req *sip.Request, ct *sip.ContactHeader) int {
	expires := -1
	if v, ok := ct.Params.Get("expires"); ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			expires = n
		}
	}
	if expires < 0 {
		expires = expiresHeader(req)
	}
	if expires < 0 {
		expires = s.cfg.Registrar.DefaultExpires
	}
	return min(expires, s.cfg.Registrar.MaxExpires)
}

// expiresHeader returns the Expires header value or -1.
func expiresHeader(req *sip.Request) int {
	h := req.GetHeader("Expires")
	if h == nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(h.Value()))
	if err != nil || n < 0 {
		return -1
	}
	return n
}
