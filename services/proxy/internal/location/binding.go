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
	// Q is the contact's q-value: routing rings the contacts of the
	// highest one first, all at once. Unset (registered without q, or
	// stored by an older release, whose records lack the field) ranks as
	// 1.0; older releases reading a newer record ignore it.
	Q QValue `json:"q,omitzero"`
}

// Expired reports whether the binding has lapsed at now.
func (b Binding) Expired(now time.Time) bool { return !now.Before(b.Expires) }

// ErrConflict means other registrations of the AOR kept changing its
// bindings between this update's read and its write, more times than an
// update retries. Nothing was changed; the registrar answers 500 with
// Retry-After so the phone tries again shortly.
var ErrConflict = errors.New("bindings changed by concurrent updates")

// ErrTooLarge means the registration cannot be stored however often it is
// retried: its AOR is too long to make a key of, or its bindings together
// exceed what the bus carries in one message. Nothing was changed.
var ErrTooLarge = errors.New("registration too large for the location store")

// ErrUnchanged, returned by a Change, leaves the bindings as they are:
// Update then writes nothing and returns the live bindings.
var ErrUnchanged = errors.New("bindings left unchanged")

// Change computes an AOR's next bindings from its live ones, newest first.
// Update may run it more than once, each time on a fresher read, so it must
// have no effect besides its result. The slice it gets is its own to change.
type Change func(live []Binding) ([]Binding, error)

// Store is what the registrar and the router need from a location service.
// Implementations must be safe for concurrent use.
type Store interface {
	// Lookup returns the live bindings of aor, newest first.
	Lookup(ctx context.Context, aor string) ([]Binding, error)
	// Update replaces the live bindings of aor with what change makes of
	// them, atomically: no other Update of aor, through any replica, lands
	// between the bindings change was given and the write of its result,
	// so whatever change checks (CSeq order, the contact limit) still holds
	// once written. Lapsed bindings are dropped on the way. It returns the
	// bindings as stored, newest first, or change's error.
	Update(ctx context.Context, aor string, change Change) ([]Binding, error)
	// Count returns the number of live bindings, for the active-registrations gauge.
	Count() int
}

// liveBindings returns a fresh slice of the bindings of bs that have not
// lapsed at now, newest first.
func liveBindings(bs []Binding, now time.Time) []Binding {
	out := make([]Binding, 0, len(bs))
	for _, b := range bs {
		if !b.Expired(now) {
			out = append(out, b)
		}
	}
	SortNewestFirst(out)
	return out
}

// hasLapsed reports whether any binding of bs has lapsed at now.
func hasLapsed(bs []Binding, now time.Time) bool {
	for _, b := range bs {
		if b.Expired(now) {
			return true
		}
	}
	return false
}

// SortNewestFirst orders bindings by UpdatedAt descending, contact as
// tie-break so the order is deterministic: the order routing tries them in
// and the registrar evicts from the end of.
func SortNewestFirst(bs []Binding) {
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
