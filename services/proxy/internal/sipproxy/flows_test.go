package sipproxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

func flowServer(t *testing.T, replica, secret string) *Server {
	t.Helper()
	cfg := testConfig()
	cfg.ReplicaAddr = replica
	cfg.Auth.NonceSecret = secret
	s, err := New(cfg, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.closeListeners(); _ = s.ua.Close() })
	return s
}

// A held flow's alias names its holder and is signed: any replica with the
// shared secret verifies it, nothing else does, and any change breaks it.
func TestHeldFlowAliasIsSignedForTheReplicas(t *testing.T) {
	holder := flowServer(t, "10.1.0.7:5060", "shared")
	other := flowServer(t, "10.1.0.8:5060", "shared")
	stranger := flowServer(t, "10.1.0.9:5060", "another secret")

	var contact, other2 sip.Uri
	if err := sip.ParseUri("sip:bob@10.0.0.5:5062;transport=tls", &contact); err != nil {
		t.Fatal(err)
	}
	if err := sip.ParseUri("sip:mallory@10.0.0.6:5062;transport=tls", &other2); err != nil {
		t.Fatal(err)
	}
	v := holder.heldAlias(contact, "call-1", "198.51.100.7:40112", "TLS", "10.1.0.7:5060")
	a, ok := parseFlowAlias(v)
	if !ok || a.dest != "198.51.100.7:40112" || a.transport != "TLS" || a.holder != "10.1.0.7:5060" {
		t.Fatalf("alias %q parsed as %+v, %v", v, a, ok)
	}
	if !other.verified(contact, "call-1", a) || !holder.verified(contact, "call-1", a) {
		t.Fatal("a replica sharing the secret does not verify the alias")
	}
	if stranger.verified(contact, "call-1", a) {
		t.Fatal("a replica with another secret verified the alias")
	}
	forged, _ := parseFlowAlias(strings.Replace(v, "198.51.100.7~40112", "203.0.113.1~5060", 1))
	if other.verified(contact, "call-1", forged) {
		t.Fatal("an alias pointed at another address still verified")
	}
	plain, _ := parseFlowAlias("198.51.100.7~40112~tls")
	if other.verified(contact, "call-1", plain) {
		t.Fatal("an unsigned alias verified")
	}
	if other.verified(other2, "call-1", a) {
		t.Fatal("an alias copied onto another contact verified")
	}
	if other.verified(contact, "call-2", a) {
		t.Fatal("an alias verified in another call")
	}
	for _, bad := range []string{"1.2.3.4~5060~tcp~10.1.0.7~5060", "1.2.3.4~5060~tcp~~5060~" + strings.Repeat("0", flowMACLen), "1.2.3.4~5060~tcp~h~0~" + strings.Repeat("0", flowMACLen)} {
		if _, ok := parseFlowAlias(bad); ok {
			t.Errorf("alias %q parsed", bad)
		}
	}
}

// A request naming a flow this replica holds is relayed only with valid
// signatures: the alias's, and out of a dialog the request's own on the
// Route in front of it. A signed alias alone starts nothing, and a
// forgery is refused before anything is sent.
func TestFlowRelayNeedsItsSignatures(t *testing.T) {
	s := flowServer(t, "10.1.0.7:5060", "shared")
	var contact sip.Uri
	if err := sip.ParseUri("sip:bob@198.51.100.7", &contact); err != nil {
		t.Fatal(err)
	}
	alias := s.heldAlias(contact, "call-1", "198.51.100.7:40112", "TCP", "10.1.0.7:5060")
	request := func(alias string, inDialog bool) *sip.Request {
		t.Helper()
		var uri sip.Uri
		if err := sip.ParseUri("sip:bob@198.51.100.7;alias="+alias, &uri); err != nil {
			t.Fatal(err)
		}
		req := sip.NewRequest(sip.INVITE, uri)
		req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "example.com"}, Params: sip.HeaderParams{{K: "tag", V: "a1"}}})
		to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "example.com"}, Params: sip.NewParams()}
		if inDialog {
			to.Params.Add("tag", "b1")
		}
		req.AppendHeader(to)
		callID := sip.CallIDHeader("call-1")
		req.AppendHeader(&callID)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
		return req
	}

	// Out of a dialog, the alias alone is not a relay.
	if _, _, ok := s.flowRelay(request(alias, false)); ok {
		t.Fatal("a signed alias without the relay route was taken for a relay")
	}
	// Behind a route whose signature is for another request: refused.
	req := request(alias, false)
	other := request(alias, false)
	other.CSeq().SeqNo = 2
	req.PrependHeader(s.relayRoute(other, "10.1.0.7:5060", alias))
	a, relayMAC, ok := s.flowRelay(req)
	if !ok {
		t.Fatal("a request behind the relay route is not taken for a relay")
	}
	if err := s.relayToFlow(&call{req: req}, a, relayMAC); !errors.Is(err, errRelayDenied) {
		t.Fatalf("relay signed for another request: %v, want errRelayDenied", err)
	}
	// Within a dialog, a forged alias: refused.
	forged := alias[:len(alias)-4] + "0000"
	if forged == alias {
		forged = alias[:len(alias)-4] + "1111"
	}
	inDialog := request(forged, true)
	a, relayMAC, ok = s.flowRelay(inDialog)
	if !ok {
		t.Fatal("an in-dialog request naming this replica's flow is not taken for a relay")
	}
	if err := s.relayToFlow(&call{req: inDialog}, a, relayMAC); !errors.Is(err, errRelayDenied) {
		t.Fatalf("forged alias: %v, want errRelayDenied", err)
	}
	// Another replica relays nothing it does not hold.
	if _, _, ok := flowServer(t, "10.1.0.8:5060", "shared").flowRelay(request(alias, true)); ok {
		t.Fatal("a replica relays a flow another one holds")
	}
}

func TestReplicaAddrNeedsTCPAnAddressAndASecret(t *testing.T) {
	cfg := testConfig()
	cfg.ReplicaAddr = "10.1.0.7:5060"
	cfg.Transports = []string{"udp"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "replica_addr") {
		t.Fatalf("replica_addr without tcp: %v", err)
	}
	cfg.Transports = []string{"udp", "tcp"}
	cfg.ReplicaAddr = "10.1.0.7"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "replica_addr") {
		t.Fatalf("replica_addr without a port: %v", err)
	}
	cfg.ReplicaAddr = "10.1.0.7:5060"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "nonce_secret") {
		t.Fatalf("replica_addr without a shared nonce secret: %v", err)
	}
	cfg.Auth.NonceSecret = "shared"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("replica_addr with tcp and a secret: %v", err)
	}
}
