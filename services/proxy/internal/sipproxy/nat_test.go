package sipproxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"
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
