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

// register implements the registrar (RFC 3261 10.3) for local domains.
func (s *Server) register(c *call) error {
	req := c.req
	out := s.auth.check(req, false)
	if !out.ok {
		s.challenge(c, false, out)
		return nil
	}
	to := req.To()
	if to.Address.User != out.user {
		return fmt.Errorf("register %q as %q: %w", to.Address.User, out.user, errIdentityMismatch)
	}
	aor := s.self.aor(to.Address)
	c.log = c.logger().With().Str("aor", aor).Logger()

	contacts, err := registerContacts(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultConnectTimeout)
	defer cancel()
	current, err := s.loc.Lookup(ctx, aor)
	if err != nil {
		return fmt.Errorf("look up %s: %w", aor, err)
	}
	if len(contacts) == 1 && contacts[0].Address.Wildcard {
		if expiresHeader(req) != 0 {
			return fmt.Errorf("wildcard contact needs expires 0: %w", errMalformed)
		}
		for _, b := range current {
			if err := s.loc.Remove(ctx, aor, b.Contact); err != nil {
				return fmt.Errorf("unregister %s: %w", aor, err)
			}
		}
		c.logger().Info().Msg("unregistered all contacts")
		s.reply(c, sip.StatusOK, "OK")
		return nil
	}

	now := s.now()
	callID := req.CallID().Value()
	seq := req.CSeq().SeqNo
	for _, ct := range contacts {
		if ct.Address.Wildcard {
			return fmt.Errorf("wildcard contact among others: %w", errMalformed)
		}
		uri := contactKey(ct)
		expires := s.grantedExpires(req, ct)
		if expires > 0 && expires < s.cfg.Registrar.MinExpires {
			return &intervalTooBriefError{min: s.cfg.Registrar.MinExpires}
		}
		if prev, ok := findBinding(current, uri); ok && prev.CallID == callID && prev.CSeq >= seq {
			// An older REGISTER overtaking a newer one must not undo it.
			continue
		}
		if expires == 0 {
			if err := s.loc.Remove(ctx, aor, uri); err != nil {
				return fmt.Errorf("unregister %s: %w", aor, err)
			}
			continue
		}
		b := location.Binding{
			AOR:       aor,
			Contact:   uri,
			Received:  req.Source(),
			Transport: strings.ToUpper(req.Transport()),
			Holder:    s.holderFor(req.Transport()),
			Expires:   now.Add(time.Duration(expires) * time.Second),
			CallID:    callID,
			CSeq:      seq,
			UpdatedAt: now,
		}
		if h := req.GetHeader("User-Agent"); h != nil {
			b.UserAgent = h.Value()
		}
		if err := s.loc.Save(ctx, b); err != nil {
			return fmt.Errorf("register %s: %w", aor, err)
		}
	}
	bindings, err := s.enforceMaxContacts(ctx, aor)
	if err != nil {
		return err
	}
	hdrs := make([]sip.Header, 0, len(bindings)+1)
	for _, b := range bindings {
		var uri sip.Uri
		if err := sip.ParseUri(b.Contact, &uri); err != nil {
			continue
		}
		left := int(b.Expires.Sub(now).Round(time.Second).Seconds())
		hdrs = append(hdrs, &sip.ContactHeader{Address: uri, Params: sip.HeaderParams{{K: "expires", V: strconv.Itoa(max(left, 0))}}})
	}
	c.logger().Debug().Int("contacts", len(bindings)).Msg("registered")
	s.reply(c, sip.StatusOK, "OK", hdrs...)
	return nil
}

// enforceMaxContacts drops the oldest contacts beyond the limit.
func (s *Server) enforceMaxContacts(ctx context.Context, aor string) ([]location.Binding, error) {
	bindings, err := s.loc.Lookup(ctx, aor)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", aor, err)
	}
	for len(bindings) > s.cfg.Registrar.MaxContacts {
		oldest := bindings[len(bindings)-1]
		if err := s.loc.Remove(ctx, aor, oldest.Contact); err != nil {
			return nil, fmt.Errorf("evict contact of %s: %w", aor, err)
		}
		bindings = bindings[:len(bindings)-1]
	}
	return bindings, nil
}

func registerContacts(req *sip.Request) ([]*sip.ContactHeader, error) {
	var out []*sip.ContactHeader
	for _, h := range req.GetHeaders("Contact") {
		ct, ok := h.(*sip.ContactHeader)
		if !ok {
			return nil, fmt.Errorf("unparsable contact: %w", errMalformed)
		}
		out = append(out, ct)
	}
	return out, nil
}

// contactKey is the contact URI as stored: without our NAT alias, which is
// about the path, not the binding.
func contactKey(ct *sip.ContactHeader) string {
	uri := ct.Address.Clone()
	uri.UriParams.Remove(aliasParam)
	return uri.String()
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

func findBinding(bs []location.Binding, contact string) (location.Binding, bool) {
	for _, b := range bs {
		if b.Contact == contact {
			return b, true
		}
	}
	return location.Binding{}, false
}
