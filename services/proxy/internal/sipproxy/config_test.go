package sipproxy

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	gw := GatewayGroup{Name: "pstn", Gateways: []Gateway{{Addr: "192.0.2.1:5060"}}}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring naming the field; "" means valid
	}{
		{name: "zero config works", cfg: Config{}},
		{name: "bad listen addr", cfg: Config{ListenAddr: "nope"}, wantErr: "listen_addr"},
		{name: "bad transport", cfg: Config{Transports: []string{"sctp"}}, wantErr: "transports[0]"},
		{name: "bad cidr", cfg: Config{TrustedNetworks: []string{"10.0.0.0/33"}}, wantErr: "trusted_networks[0]"},
		{name: "user without ha1", cfg: Config{Auth: AuthConfig{Users: []User{{Username: "bob"}}}}, wantErr: "auth.users[0]"},
		{name: "short md5 ha1", cfg: Config{Auth: AuthConfig{Users: []User{{Username: "bob", HA1MD5: "abc"}}}}, wantErr: "auth.users[0].ha1_md5"},
		{name: "unknown algorithm", cfg: Config{Auth: AuthConfig{Algorithms: []string{"SHA-1"}}}, wantErr: "auth.algorithms[0]"},
		{name: "min above max expires", cfg: Config{Registrar: RegistrarConfig{MinExpires: 7200}}, wantErr: "registrar.min_expires"},
		{name: "no contacts allowed", cfg: Config{Registrar: RegistrarConfig{MaxContacts: -1}}, wantErr: "registrar.max_contacts"},
		{name: "rule to unknown group", cfg: Config{Dialplan: []DialplanRule{{Prefix: "1", Group: "x"}}}, wantErr: "dialplan[0].group"},
		{name: "rule with prefix and regex", cfg: Config{GatewayGroups: []GatewayGroup{gw}, Dialplan: []DialplanRule{{Prefix: "1", Regex: "1", Group: "pstn"}}}, wantErr: "dialplan[0]"},
		{name: "bad regex", cfg: Config{GatewayGroups: []GatewayGroup{gw}, Dialplan: []DialplanRule{{Regex: "(", Group: "pstn"}}}, wantErr: "dialplan[0].regex"},
		{name: "bad policy", cfg: Config{GatewayGroups: []GatewayGroup{{Name: "g", Policy: "random", Gateways: gw.Gateways}}}, wantErr: "gateway_groups[0].policy"},
		{name: "gateway without port", cfg: Config{GatewayGroups: []GatewayGroup{{Name: "g", Gateways: []Gateway{{Addr: "192.0.2.1"}}}}}, wantErr: "gateway_groups[0].gateways[0].addr"},
		{name: "valid dialplan", cfg: Config{GatewayGroups: []GatewayGroup{gw}, Dialplan: []DialplanRule{{Prefix: "00", Strip: 2, Group: "pstn"}}}},
		{name: "linger below 1s", cfg: Config{TransactionLinger: 500 * time.Millisecond}, wantErr: "transaction_linger"},
		{name: "linger above 64*T1", cfg: Config{TransactionLinger: time.Minute}, wantErr: "transaction_linger"},
		{name: "idle timeout within timer c", cfg: Config{TCPIdleTimeout: 2 * time.Minute}, wantErr: "tcp_idle_timeout"},
		{name: "idle timeout never", cfg: Config{TCPIdleTimeout: -1}},
		{name: "idle timeout above timer c", cfg: Config{TCPIdleTimeout: 2 * time.Minute, InviteTimeout: time.Minute}},
		{name: "failure code of the callee", cfg: Config{GatewayFailure: GatewayFailure{Codes: []int{486}}}, wantErr: "gateway_failure.codes[0]"},
		{name: "failure code 2xx", cfg: Config{GatewayFailure: GatewayFailure{Codes: []int{503, 200}}}, wantErr: "gateway_failure.codes[1]"},
		{name: "duplicate failure code", cfg: Config{GatewayFailure: GatewayFailure{Codes: []int{503, 503}}}, wantErr: "gateway_failure.codes[1]"},
		{name: "negative down_after", cfg: Config{GatewayFailure: GatewayFailure{DownAfter: -1}}, wantErr: "gateway_failure.down_after"},
		{name: "down_after past its counter", cfg: Config{GatewayFailure: GatewayFailure{DownAfter: 1 << 31}}, wantErr: "gateway_failure.down_after"},
		{name: "hold-down too short", cfg: Config{GatewayFailure: GatewayFailure{HoldDown: 10 * time.Millisecond}}, wantErr: "gateway_failure.hold_down"},
		{name: "retry-after cap below 1s", cfg: Config{GatewayFailure: GatewayFailure{MaxRetryAfter: 500 * time.Millisecond}}, wantErr: "gateway_failure.max_retry_after"},
		{name: "group failure code of the callee", cfg: Config{GatewayGroups: []GatewayGroup{{Name: "g", Gateways: gw.Gateways, Failure: GatewayFailure{Codes: []int{404}}}}}, wantErr: "gateway_groups[0].failure.codes[0]"},
		{name: "udp mtu below the floor", cfg: Config{UDPMTU: 100}, wantErr: "udp_mtu"},
		{name: "udp mtu above the udp limit", cfg: Config{UDPMTU: 9000, UDPMaxMessageSize: 8000}, wantErr: "udp_mtu"},
		{name: "jumbo udp mtu", cfg: Config{UDPMTU: 8000}},
		{name: "unknown try proto", cfg: Config{UDPMTUTryProto: "sctp"}, wantErr: "udp_mtu_try_proto"},
		{name: "try proto udp", cfg: Config{UDPMTUTryProto: "udp"}},
		{name: "udp limit below sipgo's", cfg: Config{UDPMaxMessageSize: 1200, UDPMTU: 1000}, wantErr: "udp_max_message_size"},
		{name: "udp limit above a datagram", cfg: Config{UDPMaxMessageSize: 70000}, wantErr: "udp_max_message_size"},
		{name: "group failure policy", cfg: Config{GatewayGroups: []GatewayGroup{{Name: "g", Gateways: gw.Gateways, Failure: GatewayFailure{DownAfter: 3, Codes: []int{408, 500, 503}, HoldDown: time.Minute}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want mention of %q", err, tc.wantErr)
			}
		})
	}
}

func TestDialplanMatch(t *testing.T) {
	d, err := newDialplan([]DialplanRule{
		{Name: "intl", Prefix: "00", Strip: 2, AddPrefix: "+", Group: "intl"},
		{Name: "e164", Regex: `^\+[0-9]+$`, Group: "e164"},
		{Name: "local", Prefix: "", Regex: `^[2-9][0-9]{6}$`, AddPrefix: "+1555", Group: "local"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, wantGroup, wantUser string
		ok                        bool
	}{
		{user: "0044123", wantGroup: "intl", wantUser: "+44123", ok: true},
		{user: "+15551234", wantGroup: "e164", wantUser: "+15551234", ok: true},
		{user: "5551234", wantGroup: "local", wantUser: "+15555551234", ok: true},
		{user: "alice", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.user, func(t *testing.T) {
			r, user, ok := d.match(tc.user)
			if ok != tc.ok {
				t.Fatalf("ok %v, want %v", ok, tc.ok)
			}
			if ok && (r.Group != tc.wantGroup || user != tc.wantUser) {
				t.Fatalf("got %s %s, want %s %s", r.Group, user, tc.wantGroup, tc.wantUser)
			}
		})
	}
}
