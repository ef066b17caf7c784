package sipproxy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/services/proxy/internal/location"
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

// registerFrom builds a REGISTER of bob's device dev with the given
// Call-ID and CSeq, as one user agent's successive registrations carry them.
// The digest retry sends it with the CSeq one higher.
func registerFrom(p *peer, callID string, cseq uint32, dev string, expires int) *sip.Request {
	req := p.registerReq("bob", expires)
	req.RemoveHeader("Contact")
	req.AppendHeader(p.contact("bob", dev, expires))
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.REGISTER})
	return req
}

// TestRegisterOrderAcrossContacts: a REGISTER with the Call-ID of one of
// the AOR's bindings and a CSeq below it was overtaken by a later one of
// the same phone, whatever contacts it lists, and is refused without
// changing anything: it must not evict the newer binding to make room,
// bring back the contact the phone moved from, or remove one.
func TestRegisterOrderAcrossContacts(t *testing.T) {
	const callID = "phone-1@test"
	type register struct {
		cseq    uint32
		dev     string
		expires int
	}
	tests := []struct {
		name        string
		maxContacts int
		// before are registered in order, each answered 200.
		before      []register
		late        register
		wantStatus  int
		wantDevices []string
	}{
		{
			name: "older for another contact evicts nothing", maxContacts: 1,
			before:     []register{{10, "new", 600}},
			late:       register{5, "old", 600},
			wantStatus: sip.StatusBadRequest, wantDevices: []string{"new"},
		},
		{
			name: "older for another contact binds nothing", maxContacts: 10,
			before:     []register{{10, "new", 600}},
			late:       register{5, "old", 600},
			wantStatus: sip.StatusBadRequest, wantDevices: []string{"new"},
		},
		{
			name: "older removal of another contact removes nothing", maxContacts: 10,
			before:     []register{{3, "old", 600}, {10, "new", 600}},
			late:       register{5, "old", 0},
			wantStatus: sip.StatusBadRequest, wantDevices: []string{"new", "old"},
		},
		{
			name: "newer for another contact evicts the older", maxContacts: 1,
			before:     []register{{10, "new", 600}},
			late:       register{20, "newest", 600},
			wantStatus: sip.StatusOK, wantDevices: []string{"newest"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			cfg.Registrar.MaxContacts = tc.maxContacts
			p := startProxy(t, cfg)
			phone := newPeer(t, "phone")
			for _, r := range tc.before {
				if res := phone.register(t, p.Addr("udp"), registerFrom(phone, callID, r.cseq, r.dev, r.expires), testPassword); res.StatusCode != sip.StatusOK {
					t.Fatalf("register %s cseq %d: %d", r.dev, r.cseq, res.StatusCode)
				}
			}
			res := phone.register(t, p.Addr("udp"), registerFrom(phone, callID, tc.late.cseq, tc.late.dev, tc.late.expires), testPassword)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d %q, want %d", res.StatusCode, res.Reason, tc.wantStatus)
			}
			if got := devicesBound(t, p); !slices.Equal(got, tc.wantDevices) {
				t.Fatalf("devices bound %v, want %v", got, tc.wantDevices)
			}
		})
	}
}

// changeRecorder is a memory store that remembers whether the last change
// it ran asked to write nothing.
type changeRecorder struct {
	*location.MemoryStore
	mu        sync.Mutex
	unchanged bool
}

func (r *changeRecorder) Update(ctx context.Context, aor string, change location.Change) ([]location.Binding, error) {
	return r.MemoryStore.Update(ctx, aor, func(live []location.Binding) ([]location.Binding, error) {
		next, err := change(live)
		r.mu.Lock()
		r.unchanged = errors.Is(err, location.ErrUnchanged)
		r.mu.Unlock()
		return next, err
	})
}

func (r *changeRecorder) lastUnchanged() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unchanged
}

// TestRegisterAboveMaxContacts: an AOR can hold more bindings than this
// replica's max_contacts (written by a replica configured higher, or
// before the limit was lowered). A query must change nothing (RFC 3261
// 10.3 step 8), a refresh or a removal must evict nothing, and a new
// contact evicts only as many others as it adds.
func TestRegisterAboveMaxContacts(t *testing.T) {
	tests := []struct {
		name string
		// contacts of the REGISTER, by device and expires; none is a query.
		contacts    map[string]int
		wantDevices []string
	}{
		{name: "query", wantDevices: []string{"a", "b", "c"}},
		{name: "refresh", contacts: map[string]int{"a": 600}, wantDevices: []string{"a", "b", "c"}},
		{name: "removal", contacts: map[string]int{"a": 0}, wantDevices: []string{"b", "c"}},
		{name: "one new contact", contacts: map[string]int{"z": 600}, wantDevices: []string{"b", "c", "z"}},
		{name: "two new contacts", contacts: map[string]int{"y": 600, "z": 600}, wantDevices: []string{"c", "y", "z"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			phone := newPeer(t, "phone")
			store := &changeRecorder{MemoryStore: location.NewMemoryStore(nil)}
			now := time.Now()
			_, err := store.Update(context.Background(), "bob@localhost", func([]location.Binding) ([]location.Binding, error) {
				var bs []location.Binding
				// a is the least recently registered.
				for i, dev := range []string{"a", "b", "c"} {
					bs = append(bs, location.Binding{
						AOR: "bob@localhost", Contact: contactKey(phone.contact("bob", dev, 600)), Received: "127.0.0.1:5099", Transport: "UDP",
						Expires: now.Add(time.Hour), CallID: "other-" + dev, CSeq: 1, UpdatedAt: now.Add(time.Duration(i) * time.Second),
					})
				}
				return bs, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			cfg := testConfig()
			cfg.Auth = authConfig("bob")
			cfg.Registrar.MaxContacts = 2
			p := startProxy(t, cfg, WithLocationStore(store))
			req := phone.registerReq("bob", 600)
			req.RemoveHeader("Contact")
			if len(tc.contacts) == 0 {
				req.RemoveHeader("Expires")
			}
			for dev, expires := range tc.contacts {
				req.AppendHeader(phone.contact("bob", dev, expires))
			}
			res := phone.register(t, p.Addr("udp"), req, testPassword)
			if res.StatusCode != sip.StatusOK {
				t.Fatalf("status %d %q", res.StatusCode, res.Reason)
			}
			if got := devicesBound(t, p); !slices.Equal(got, tc.wantDevices) {
				t.Fatalf("devices bound %v, want %v", got, tc.wantDevices)
			}
			if n := len(res.GetHeaders("Contact")); n != len(tc.wantDevices) {
				t.Errorf("200 lists %d contacts, want %d", n, len(tc.wantDevices))
			}
			if len(tc.contacts) == 0 && !store.lastUnchanged() {
				t.Error("a query wrote the bindings")
			}
		})
	}
}
