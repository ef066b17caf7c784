package sipproxy

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// testClock is a clock a test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// devicesBound returns the dev parameters of bob's bound contacts, sorted.
func devicesBound(t *testing.T, p *runningProxy) []string {
	t.Helper()
	bs, err := p.loc.Lookup(context.Background(), "bob@localhost")
	if err != nil {
		t.Fatal(err)
	}
	var devs []string
	for _, b := range bs {
		var uri sip.Uri
		if err := sip.ParseUri(b.Contact, &uri); err != nil {
			t.Fatalf("stored contact %q: %v", b.Contact, err)
		}
		dev, _ := uri.UriParams.Get("dev")
		devs = append(devs, dev)
	}
	slices.Sort(devs)
	return devs
}

// TestRegisterMaxContacts: a REGISTER whose own contacts exceed
// max_contacts is refused whole, as Kamailio's registrar does, and one that
// fits keeps every contact it adds, evicting the AOR's other bindings,
// least recently registered first.
func TestRegisterMaxContacts(t *testing.T) {
	type contact struct {
		dev     string
		expires int
	}
	tests := []struct {
		name string
		// existing are registered first, one REGISTER (one device) each,
		// with the clock moved by the given step after each.
		existing []string
		step     time.Duration
		contacts []contact
		// wantStatus and wantDevices are the answer to contacts and what
		// is bound after it.
		wantStatus  int
		wantDevices []string
	}{
		{
			name:     "own contacts beyond the limit refused whole",
			existing: []string{"a"}, step: time.Second,
			contacts:   []contact{{"x", 600}, {"y", 600}, {"z", 600}},
			wantStatus: sip.StatusServiceUnavailable, wantDevices: []string{"a"},
		},
		{
			name:       "own contacts beyond the limit on an empty aor",
			contacts:   []contact{{"x", 600}, {"y", 600}, {"z", 600}},
			wantStatus: sip.StatusServiceUnavailable,
		},
		{
			name:       "a contact listed twice counts once",
			contacts:   []contact{{"x", 600}, {"x", 600}, {"y", 600}},
			wantStatus: sip.StatusOK, wantDevices: []string{"x", "y"},
		},
		{
			name:     "a removed contact makes room",
			existing: []string{"a", "b"}, step: time.Second,
			contacts:   []contact{{"a", 0}, {"z", 600}},
			wantStatus: sip.StatusOK, wantDevices: []string{"b", "z"},
		},
		{
			name:     "the least recently registered other goes",
			existing: []string{"a", "b"}, step: time.Second,
			contacts:   []contact{{"z", 600}},
			wantStatus: sip.StatusOK, wantDevices: []string{"b", "z"},
		},
		{
			// Bindings written at the same instant, or by a replica whose
			// clock is ahead, must not make the new contact the one cut.
			name:     "the new contact stays when the clocks tie",
			existing: []string{"a", "b"},
			contacts: []contact{{"z", 600}},
			// Of a and b, the order of contacts picks the one kept.
			wantStatus: sip.StatusOK, wantDevices: []string{"a", "z"},
		},
		{
			name:     "refreshing and adding at the limit",
			existing: []string{"a", "b"}, step: time.Second,
			contacts:   []contact{{"b", 600}, {"z", 600}},
			wantStatus: sip.StatusOK, wantDevices: []string{"b", "z"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &testClock{now: time.Now()}
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			cfg.Registrar.MaxContacts = 2
			p := startProxy(t, cfg, WithClock(clock.Now))
			phone := newPeer(t, "phone")
			for _, dev := range tc.existing {
				req := phone.registerReq("bob", 600)
				req.RemoveHeader("Contact")
				req.AppendHeader(phone.contact("bob", dev, 600))
				if res := phone.register(t, p.Addr("udp"), req, testPassword); res.StatusCode != sip.StatusOK {
					t.Fatalf("register %s: %d", dev, res.StatusCode)
				}
				clock.advance(tc.step)
			}
			req := phone.registerReq("bob", 600)
			req.RemoveHeader("Contact")
			for _, c := range tc.contacts {
				req.AppendHeader(phone.contact("bob", c.dev, c.expires))
			}
			res := phone.register(t, p.Addr("udp"), req, testPassword)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d %q, want %d", res.StatusCode, res.Reason, tc.wantStatus)
			}
			if res.StatusCode == sip.StatusServiceUnavailable {
				if res.Reason != "Too Many Registered Contacts" {
					t.Errorf("reason %q", res.Reason)
				}
				if h := res.GetHeader("Retry-After"); h != nil {
					t.Errorf("Retry-After %q on a REGISTER that cannot succeed later", h.Value())
				}
			}
			if got := devicesBound(t, p); !slices.Equal(got, tc.wantDevices) {
				t.Fatalf("devices bound %v, want %v", got, tc.wantDevices)
			}
			if res.StatusCode == sip.StatusOK && len(res.GetHeaders("Contact")) != len(tc.wantDevices) {
				t.Errorf("200 lists %d contacts, want %d", len(res.GetHeaders("Contact")), len(tc.wantDevices))
			}
		})
	}
}
