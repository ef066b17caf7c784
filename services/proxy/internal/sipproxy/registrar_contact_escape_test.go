package sipproxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestEscapedPercentIsNotAnEscape: "%25" is an escaped '%'. Decoded, the
// "2F" after it would read as the escape %2F of a reserved '/', and the
// user "a%252Fb" (characters a % 2 F b) would equal "a%2Fb" (characters
// a / b), which RFC 3261 19.1.4 keeps apart.
func TestEscapedPercentIsNotAnEscape(t *testing.T) {
	tests := []struct{ name, a, b string }{
		{name: "user", a: "sip:a%252Fb@192.0.2.1", b: "sip:a%2Fb@192.0.2.1"},
		{name: "param value", a: "sip:alice@192.0.2.1;line=x%253Bz", b: "sip:alice@192.0.2.1;line=x%3Bz"},
		// Unicode case folding would turn every octet that is not UTF-8
		// into U+FFFD: %FF and %FE (distinct octets, no letters to fold)
		// would come out the same.
		{name: "param value octets that are not utf-8", a: "sip:alice@192.0.2.1;line=%FF", b: "sip:alice@192.0.2.1;line=%FE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a, b sip.Uri
			if err := sip.ParseUri(tc.a, &a); err != nil {
				t.Fatal(err)
			}
			if err := sip.ParseUri(tc.b, &b); err != nil {
				t.Fatal(err)
			}
			if uriEqual(&a, &b) {
				t.Errorf("uriEqual(%s, %s) = true, want false: unescaping made distinct characters one", tc.a, tc.b)
			}
		})
	}
}

// TestRemovalOfAnotherUserKeepsTheBinding: through the registrar, a
// removal (expires 0) of the contact whose user is "a%2Fb" literally (an
// escaped percent) leaves the binding of the user "a/b" (an escaped
// slash), a different URI.
func TestRemovalOfAnotherUserKeepsTheBinding(t *testing.T) {
	cfg := testConfig()
	cfg.Auth = authConfig("bob")
	p := startProxy(t, cfg)
	phone := newPeer(t, "phone")
	registerContact(t, p, phone, "sip:a%2Fb@192.0.2.1:5060", 600)
	registerContact(t, p, phone, "sip:a%252Fb@192.0.2.1:5060", 0)
	if got := p.loc.Count(); got != 1 {
		t.Fatalf("bindings %d after removing sip:a%%252Fb@192.0.2.1:5060, want sip:a%%2Fb@192.0.2.1:5060 still bound", got)
	}
}
