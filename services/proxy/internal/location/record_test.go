package location

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// TestKVStoreRefusesAORTooLongForAKey: an AOR whose key would not fit in a
// NATS protocol line is refused without asking the bus, which would close
// the connection for good, and the store goes on working.
func TestKVStoreRefusesAORTooLongForAKey(t *testing.T) {
	tests := []struct {
		name    string
		aor     string
		wantErr error
	}{
		{name: "longest aor with a record", aor: strings.Repeat("u", maxAORBytes-len("@localhost")) + "@localhost"},
		{name: "too long for a key", aor: strings.Repeat("u", 4000) + "@localhost", wantErr: ErrTooLarge},
		{name: "longer than a message", aor: strings.Repeat("u", 70000) + "@localhost", wantErr: ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Not watching: lookups read the bucket.
			s := openKVStore(t, startNATS(t).ClientURL())
			ctx := context.Background()
			now := time.Now()
			b := Binding{AOR: tc.aor, Contact: "sip:u@10.0.0.1", Expires: now.Add(time.Hour), UpdatedAt: now}
			_, err := s.Update(ctx, tc.aor, func([]Binding) ([]Binding, error) { return []Binding{b}, nil })
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("update: %v, want %v", err, tc.wantErr)
			}
			got, err := s.Lookup(ctx, tc.aor)
			if err != nil {
				t.Fatalf("lookup: %v", err)
			}
			if want := tc.wantErr == nil; (len(got) == 1) != want {
				t.Fatalf("lookup: %+v", got)
			}
			// The connection is still there for everyone else.
			save(t, s, bobAt("sip:bob@10.0.0.1", 1))
			if got, err := s.Lookup(ctx, "bob@localhost"); err != nil || len(got) != 1 {
				t.Fatalf("lookup of another aor afterwards: %+v, %v", got, err)
			}
		})
	}
}

// TestKVUpdateTooLargeForTheBus: bindings that together exceed the bus's
// max_payload are refused as too large, which no retry mends, not as the
// store being unavailable, and what was stored stays.
func TestKVUpdateTooLargeForTheBus(t *testing.T) {
	srv := startNATSWith(t, func(o *server.Options) { o.MaxPayload = 16 << 10 })
	s := openKVStore(t, srv.ClientURL())
	ctx := context.Background()
	save(t, s, bobAt("sip:bob@10.0.0.1", 1))
	_, err := s.Update(ctx, "bob@localhost", func(live []Binding) ([]Binding, error) {
		for i := range 20 {
			b := bobAt("sip:bob@10.0.0.1;pad="+strings.Repeat("x", 1000), uint32(i+2))
			b.Contact += string(rune('a' + i))
			live = append(live, b)
		}
		return live, nil
	})
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("update: %v, want ErrTooLarge and not ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "bob@localhost") {
		t.Errorf("error %q does not name the aor", err)
	}
	if got, err := s.Lookup(ctx, "bob@localhost"); err != nil || !equalContacts(got, []string{"sip:bob@10.0.0.1"}) {
		t.Fatalf("bucket holds %+v, %v after the refused update", got, err)
	}
}
