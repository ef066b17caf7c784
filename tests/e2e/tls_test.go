package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// selfSignedCert writes a certificate for 127.0.0.1 and its key into a
// temporary directory and returns their paths and a pool trusting it.
func selfSignedCert(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "callgrid e2e proxy"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// tlsListener is a TLS listener on a free port with a fresh self-signed
// certificate: the YAML for proxyOpts.extra, the listener's address and
// the roots a phone must trust.
func tlsListener(t *testing.T) (extra, addr string, roots *x509.CertPool) {
	t.Helper()
	certFile, keyFile, roots := selfSignedCert(t)
	addr = "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	extra = fmt.Sprintf("  tls:\n    addr: %q\n    cert_file: %q\n    key_file: %q\n", addr, certFile, keyFile)
	return extra, addr, roots
}

// newTLSPhone is a PCMU phone that talks to the proxy over TLS only,
// verifying the proxy's certificate against roots. It listens nowhere:
// the proxy reaches it back over the connection it opened, so its Contact
// names no port (the INVITE's gets the connection's, as sipgo fills it).
func newTLSPhone(t *testing.T, u user, roots *x509.CertPool, toneHz float64) *phone {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(u.name), sipgo.WithUserAgentHostname("127.0.0.1"),
		sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	params := sip.NewParams()
	params.Add("transport", "tls")
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: u.name, Host: "127.0.0.1", UriParams: params}}
	p, _ := newPhoneOn(t, u, ua, cli, contact, pcmuCodec(), 0, 101, toneHz)
	p.transport = "TLS"
	return p
}

// recordRoutes lists a message's Record-Route URIs, top first, whether the
// entries came as separate headers or comma-separated in one.
func recordRoutes(t *testing.T, msg sip.Message) []sip.Uri {
	t.Helper()
	var uris []sip.Uri
	for _, h := range msg.GetHeaders("Record-Route") {
		for entry := range strings.SplitSeq(h.Value(), ",") {
			var uri sip.Uri
			if err := sip.ParseUri(strings.Trim(strings.TrimSpace(entry), "<>"), &uri); err != nil {
				t.Fatalf("record-route %q: %v", entry, err)
			}
			uris = append(uris, uri)
		}
	}
	return uris
}

// hop is one of the proxy's listeners as a peer reaches it.
type hop struct{ transport, addr string }

func (h hop) String() string { return h.transport + " " + h.addr }

func uriHop(uri sip.Uri) hop {
	return hop{strings.ToLower(uri.UriParams.GetOr("transport", "udp")), net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port))}
}

// checkDoubleRecordRoute asserts the proxy put two entries on a dialog
// that changes transport (RFC 5658): the top one reached over the
// callee's transport, the other over the caller's, both loose routes.
func checkDoubleRecordRoute(t *testing.T, what string, msg sip.Message, calleeHop, callerHop hop) {
	t.Helper()
	got := recordRoutes(t, msg)
	want := []hop{calleeHop, callerHop}
	if len(got) != len(want) {
		t.Fatalf("%s has %d record-route entries %v, want %d", what, len(got), got, len(want))
	}
	for i, uri := range got {
		if h := uriHop(uri); h != want[i] {
			t.Errorf("%s record-route[%d] %s is %v, want %v", what, i, uri.String(), h, want[i])
		}
		if !uri.UriParams.Has("lr") {
			t.Errorf("%s record-route[%d] %s is not a loose route", what, i, uri.String())
		}
	}
}

// TestTLSCallAcrossTransports: a phone registered over TLS with digest and
// a UDP phone call each other through the proxy, each way. The dialog gets
// a double Record-Route (one entry per transport), the ACK and the BYE
// follow the route set across the transport change, audio flows through
// the node, and the hang-up frees the session.
func TestTLSCallAcrossTransports(t *testing.T) {
	extra, tlsAddr, roots := tlsListener(t)
	s := startStack(t, proxyOpts{extra: extra}, mediaOpts{})
	tlsHop, udpHop := hop{"tls", tlsAddr}, hop{"udp", s.proxy.sipAddr}

	cases := []struct {
		name string
		// tlsUser is on the TLS phone, udpUser on the UDP one: users
		// differ per case so no registration of one case is called in
		// the other.
		tlsUser, udpUser user
		tlsCalls         bool
	}{
		{name: "tls calls udp", tlsUser: alice, udpUser: bob, tlsCalls: true},
		{name: "udp calls tls", tlsUser: dave, udpUser: carol},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tlsTone, udpTone := calleeHz, callerHz
			if tc.tlsCalls {
				tlsTone, udpTone = callerHz, calleeHz
			}
			tlsPhone := newTLSPhone(t, tc.tlsUser, roots, tlsTone)
			tlsPhone.register(t, tlsAddr)
			udpPhone := newPhone(t, tc.udpUser, pcmuCodec(), 0, 101, udpTone)
			udpPhone.register(t, s.proxy.sipAddr)
			caller, callee, callerHop, calleeHop := udpPhone, tlsPhone, udpHop, tlsHop
			if tc.tlsCalls {
				caller, callee, callerHop, calleeHop = tlsPhone, udpPhone, tlsHop, udpHop
			}

			c := connect(t, caller, callee, callerHop.addr)
			if via := c.invite.Via(); via == nil || (hop{strings.ToLower(via.Transport), net.JoinHostPort(via.Host, strconv.Itoa(via.Port))}) != calleeHop {
				t.Errorf("invite reached the callee with top via %v, want the proxy's %v", via, calleeHop)
			}
			checkDoubleRecordRoute(t, "invite at the callee", c.invite, calleeHop, callerHop)
			checkDoubleRecordRoute(t, "2xx at the caller", c.out.InviteResponse, calleeHop, callerHop)
			// The callee's dialog is confirmed only by the caller's ACK,
			// which crossed the transport change along the route set.
			waitFor(t, 5*time.Second, "ack at the callee", func() bool { return c.in.LoadState() == sip.DialogStateConfirmed })

			if err := c.out.Bye(withTimeout(t, 10*time.Second)); err != nil {
				t.Fatalf("bye from the caller: %v", err)
			}
			bye := receiveWithin(t, "bye at the callee", callee.byes, 5*time.Second)
			if got := strings.ToLower(bye.Transport()); got != calleeHop.transport {
				t.Errorf("bye reached the callee over %s, want %s", got, calleeHop.transport)
			}
			if routes := bye.GetHeaders("Route"); len(routes) != 0 {
				t.Errorf("bye reached the callee with the proxy's routes left: %v", routes)
			}
			s.node.waitIdle(t)
		})
	}
}

// TestProxyHangsUpTLSPhone: when the node times a call's media out, the
// proxy's own BYE reaches a TLS caller over the connection the caller
// opened, not only the UDP callee.
func TestProxyHangsUpTLSPhone(t *testing.T) {
	extra, tlsAddr, roots := tlsListener(t)
	s := startStack(t, proxyOpts{extra: extra}, mediaOpts{mediaTimeout: time.Second})

	cases := []struct {
		name string
		// bareContact drops the Contact's transport parameter, leaving
		// the connection's address, as sipgo writes it when left alone.
		bareContact bool
		caller      user
		callee      user
	}{
		{name: "contact names tls", caller: alice, callee: bob},
		{name: "contact names no transport", bareContact: true, caller: carol, callee: dave},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			caller := newTLSPhone(t, tc.caller, roots, callerHz)
			if tc.bareContact {
				caller.contact.Address.UriParams = nil
			}
			callee := newPhone(t, tc.callee, pcmuCodec(), 0, 101, calleeHz)
			callee.register(t, s.proxy.sipAddr)
			c := connect(t, caller, callee, tlsAddr)
			c.caller.rtp.sending.Store(false)
			c.callee.rtp.sending.Store(false)
			receiveWithin(t, "bye at the udp callee", c.callee.byes, 8*time.Second)
			bye := receiveWithin(t, "bye at the tls caller", c.caller.byes, 3*time.Second)
			if got := strings.ToLower(bye.Transport()); got != "tls" {
				t.Errorf("bye reached the caller over %s, want tls", got)
			}
			s.node.waitIdle(t)
		})
	}
}
