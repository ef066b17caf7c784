package sipproxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

func TestContactAlias(t *testing.T) {
	tests := []struct {
		name      string
		contact   string
		source    string
		transport string
		want      string // "" when no alias is needed
	}{
		{name: "udp contact reached over udp", contact: "sip:alice@192.0.2.10:5062", source: "192.0.2.10:5062", transport: "UDP"},
		{name: "default port", contact: "sip:alice@192.0.2.10", source: "192.0.2.10:5060", transport: "UDP"},
		{name: "behind a nat", contact: "sip:alice@10.0.0.5:5060", source: "198.51.100.7:40112", transport: "UDP", want: "198.51.100.7~40112~udp"},
		{name: "tcp contact reached over tcp", contact: "sip:alice@192.0.2.10:5062;transport=tcp", source: "192.0.2.10:5062", transport: "TCP"},
		{name: "tls contact without transport parameter", contact: "sip:alice@192.0.2.10:49152", source: "192.0.2.10:49152", transport: "TLS", want: "192.0.2.10~49152~tls"},
		{name: "sips contact reached over tls", contact: "sips:alice@192.0.2.10:49152", source: "192.0.2.10:49152", transport: "TLS"},
		{name: "tcp connection, udp contact", contact: "sip:alice@192.0.2.10:5062", source: "192.0.2.10:5062", transport: "TCP", want: "192.0.2.10~5062~tcp"},
		{name: "unparsable source", contact: "sip:alice@192.0.2.10", source: "nonsense", transport: "UDP"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var u sip.Uri
			if err := sip.ParseUri(tc.contact, &u); err != nil {
				t.Fatal(err)
			}
			got, ok := contactAlias(u, tc.source, tc.transport)
			if ok != (tc.want != "") || got != tc.want {
				t.Fatalf("contactAlias = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

// An alias a phone writes into its own Contact is not believed: it is
// replaced by the one its source calls for, or removed when none is; a
// trusted peer's stays.
func TestForgedContactAliasIsNotBelieved(t *testing.T) {
	cfg := testConfig()
	cfg.TrustedNetworks = []string{"198.51.100.0/24"}
	s, err := New(cfg, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.closeListeners(); _ = s.ua.Close() })
	tests := []struct {
		name, contact, source, want string
	}{
		{name: "contact reached directly", contact: "sip:alice@192.0.2.10:5062;alias=203.0.113.9~5060~udp", source: "192.0.2.10:5062", want: ""},
		{name: "behind a nat", contact: "sip:alice@10.0.0.5:5060;alias=203.0.113.9~5060~udp", source: "192.0.2.10:40112", want: "192.0.2.10~40112~udp"},
		{name: "trusted peer", contact: "sip:gw@198.51.100.5:5060;alias=203.0.113.9~5060~udp", source: "198.51.100.5:5060", want: "203.0.113.9~5060~udp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var u sip.Uri
			if err := sip.ParseUri(tc.contact, &u); err != nil {
				t.Fatal(err)
			}
			req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: "localhost"})
			req.AppendHeader(&sip.ContactHeader{Address: u})
			s.addContactAlias(req, tc.source, "UDP")
			got, _ := req.Contact().Address.UriParams.Get(aliasParam)
			if got != tc.want {
				t.Fatalf("alias %q, want %q", got, tc.want)
			}
		})
	}
}
