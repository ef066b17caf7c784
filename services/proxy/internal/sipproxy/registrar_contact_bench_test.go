package sipproxy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"callgrid.dev/services/proxy/internal/location"
)

// farHalf is how many contacts of the "far" case come before its chain:
// about half of what fits.
const farHalf = 200

// crowdedRegisters are REGISTERs whose contacts, as many as the largest
// message holds, cost the registrar the most comparisons: contact(i) is
// the i-th.
var crowdedRegisters = []struct {
	name    string
	contact func(i int) string
}{
	// All distinct: more than max_contacts, refused.
	{name: "distinct", contact: func(i int) string { return "<sip:b@h;x=" + strconv.Itoa(i) + ">" }},
	// Each equal to the next only (19.1.4 equality is not transitive: a
	// parameter in one URI only is ignored): one binding is kept, and the
	// REGISTER is taken.
	{name: "chain", contact: chainContact},
	// Each of the first half equal to none of the first half, but to all
	// of the second (they lack its x): each is compared with every later
	// one of the first half. The second half is a chain: the REGISTER is
	// taken.
	{name: "far", contact: func(i int) string {
		if i < farHalf {
			return "<sip:b@h;x=" + strconv.Itoa(i) + ">"
		}
		return chainContact(i)
	}},
}

// chainContact shares one parameter with each neighbour, with the same
// value, and one with every other contact, with another.
func chainContact(i int) string {
	return "<sip:b@h;k" + strconv.Itoa(i%3) + "=" + strconv.Itoa(i) + ";k" + strconv.Itoa((i+1)%3) + "=" + strconv.Itoa(i+1) + ">"
}

// crowdedRegister is a REGISTER as large as max_message_size allows, its
// Contact header holding as many contacts made by contact as fit.
func crowdedRegister(tb testing.TB, contact func(i int) string) (*sip.Request, []*sip.ContactHeader) {
	tb.Helper()
	head := "REGISTER sip:localhost SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bench\r\n" +
		"From: <sip:bob@localhost>;tag=1\r\n" +
		"To: <sip:bob@localhost>\r\n" +
		"Call-ID: bench@127.0.0.1\r\n" +
		"CSeq: 1 REGISTER\r\n" +
		"Expires: 600\r\n" +
		"Content-Length: 0\r\n" +
		"Contact: "
	var cts []string
	size := len(head) + len("\r\n\r\n")
	for i := 0; ; i++ {
		c := contact(i)
		if size+len(c)+1 > DefaultMaxMessageSize {
			break
		}
		size += len(c) + 1
		cts = append(cts, c)
	}
	msg, err := sip.ParseMessage([]byte(head + strings.Join(cts, ",") + "\r\n\r\n"))
	if err != nil {
		tb.Fatal(err)
	}
	req := msg.(*sip.Request)
	contacts, err := registerContacts(req)
	if err != nil || len(contacts) != len(cts) {
		tb.Fatalf("parsed %d contacts (%v), built %d", len(contacts), err, len(cts))
	}
	return req, contacts
}

// registerContactsWork is what registerBindings does with the contacts of
// a REGISTER: the checks that may refuse it, then the bindings it makes on
// an AOR with none.
func registerContactsWork(s *Server, req *sip.Request, contacts []*sip.ContactHeader) {
	updates, err := s.bindingUpdates(req, contacts)
	if err != nil {
		return
	}
	s.applyBindingUpdates(nil, updates, location.Binding{})
}

// TestCrowdedRegisterCostsLittlePerContact: the contacts of a REGISTER
// were compared pairwise, each comparison folding both URIs anew, so a
// REGISTER filling the largest message cost a thousand allocations (and
// their CPU) per contact. Each contact is now folded once, compared
// without allocating, and comparisons stop once max_contacts is passed.
func TestCrowdedRegisterCostsLittlePerContact(t *testing.T) {
	const perContact = 32
	for _, tc := range crowdedRegisters {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{cfg: testConfig().WithDefaults()}
			req, contacts := crowdedRegister(t, tc.contact)
			allocs := testing.AllocsPerRun(5, func() { registerContactsWork(s, req, contacts) })
			if got := allocs / float64(len(contacts)); got > perContact {
				t.Errorf("%.0f allocations per contact of %d, want at most %d", got, len(contacts), perContact)
			}
		})
	}
}

// BenchmarkRegisterContacts is registerContactsWork on crowdedRegisters.
func BenchmarkRegisterContacts(b *testing.B) {
	for _, tc := range crowdedRegisters {
		b.Run(tc.name, func(b *testing.B) {
			s := &Server{cfg: testConfig().WithDefaults()}
			req, contacts := crowdedRegister(b, tc.contact)
			b.ReportAllocs()
			for b.Loop() {
				registerContactsWork(s, req, contacts)
			}
			b.ReportMetric(float64(len(contacts)), "contacts")
		})
	}
}
