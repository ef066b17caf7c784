package sipproxy

import (
	"fmt"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestSplitRefreshKeepsMaxContacts: URI equality is not transitive (a
// parameter only one URI has is ignored), so contacts ;dev=1 and ;dev=2,
// which differ from each other, both equal a binding written without dev.
// Only one of them refreshes it; the other is a new binding and evicts
// as one, so a phone repeating the split (bind a new plain contact, then
// split it) never takes the AOR past max_contacts.
func TestSplitRefreshKeepsMaxContacts(t *testing.T) {
	cfg := testConfig()
	cfg.Auth = authConfig("bob")
	cfg.Registrar.MaxContacts = 2
	p := startProxy(t, cfg)
	phone := newPeer(t, "phone")
	registerContact(t, p, phone, "sip:bob@192.0.2.99:5060", 600)
	var counts []int
	for i := 1; i <= 3; i++ {
		plain := fmt.Sprintf("sip:bob@192.0.2.%d:5060", i)
		registerContact(t, p, phone, plain, 600)
		req := phone.registerReq("bob", 600)
		req.RemoveHeader("Contact")
		req.AppendHeader(contactHeader(t, plain+";dev=1"))
		req.AppendHeader(contactHeader(t, plain+";dev=2"))
		if res := phone.register(t, p.Addr("udp"), req, testPassword); res.StatusCode != sip.StatusOK {
			t.Fatalf("register %s split in two: %d %s", plain, res.StatusCode, res.Reason)
		}
		counts = append(counts, p.loc.Count())
	}
	for _, n := range counts {
		if n > cfg.Registrar.MaxContacts {
			t.Fatalf("bindings after each split refresh %v, max_contacts %d", counts, cfg.Registrar.MaxContacts)
		}
	}
}
