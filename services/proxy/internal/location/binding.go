// Package location keeps registrations: which contacts currently reach an
// address-of-record (AOR), and over which observed network flow.
package location

import (
	"context"
	"errors"
	"slices"
	"time"
)

// ErrUnavailable means the backing store cannot be reached and no local
// replica can answer either. Callers map it to 503 so phones retry later.
var ErrUnavailable = errors.New("location store unavailable")

// Binding is one registered contact of an AOR.
type Binding struct {
	// AOR is the canonical address-of-record, "user@domain".
	AOR string `json:"aor"`
	// Contact is the Contact URI exactly as the phone registered it.
	Contact string `json:"contact"`
	// Received is the source "ip:port" the REGISTER came from. Behind NAT it
	// differs from the Contact host and is the only address that reaches the phone.
	Received string `json:"received"`
	// Transport is the transport the REGISTER arrived on (UDP, TCP, TLS).
	Transport string `json:"transport"`
	// Holder, for a connection-oriented flow, is the "host:port" of the
	// replica holding the connection, which requests to the contact must
	// go through (what RFC 3327's Path records, kept by the registrar).
	Holder string `json:"holder,omitempty"`
	// Expires is the absolute expiry time.
	Expires time.Time `json:"expires"`
	// CallID and CSeq order refreshes of the same binding (RFC 3261 10.3 step 7).
	CallID string `json:"call_id"`
	CSeq   uint32 `json:"cseq"`
	// UpdatedAt orders contacts newest first when routing.
	UpdatedAt time.Time `json:"updated_at"`
	// UserAgent is kept for operators; it never drives routing.
	UserAgent string `json:"user_agent,omitempty"`
}

// Expired reports whether the binding has lapsed at now.
func (b Binding) Expired(now time.Time) bool { return !now.Before(b.Expires) }

// Store is what the registrar and the router need from a location service.
// Implementations must be safe for concurrent use.
type Store interface {
	// Lookup returns the live bindings of aor, newest first.
	Lookup(ctx context.Context, aor string) ([]Binding, error)
	// Save inserts or refreshes the binding keyed by (AOR, Contact).
	Save(ctx context.Context, b Binding) error
	// Remove deletes one contact of aor; removing an absent contact is not an error.
	Remove(ctx context.Context, aor, contact string) error
	// Count returns the number of live bindings, for the active-registrations gauge.
	Count() int
}

// sortNewestFirst orders bindings by UpdatedAt descending, contact as tie-break
// so the order is deterministic.
func sortNewestFirst(bs []Binding) {
	slices.SortFunc(bs, func(a, b Binding) int {
		if c := b.UpdatedAt.Compare(a.UpdatedAt); c != 0 {
			return c
		}
		switch {
		case a.Contact < b.Contact:
			return -1
		case a.Contact > b.Contact:
			return 1
		}
		return 0
	})
}
