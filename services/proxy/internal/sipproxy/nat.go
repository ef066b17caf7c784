package sipproxy

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// aliasParam is the Contact URI parameter recording a NATed peer's observed
// address, "ip~port~transport". In-dialog requests then carry the public
// address in their Request-URI, so whichever replica receives them reaches
// the phone without any shared table (the idea of Kamailio's nathelper alias).
// A connection one replica holds adds its holder and a signature (flows.go).
const aliasParam = "alias"

// addContactAlias marks the Contact of msg when it differs from the address
// the message really came from, or when it came over a connection this
// replica holds. An alias a replica signed stays: the message was relayed
// by the holder of the flow it names.
func (s *Server) addContactAlias(msg sip.Message, source, transport string) {
	hs := msg.GetHeaders("Contact")
	if len(hs) == 0 || source == "" {
		return
	}
	c, ok := hs[0].(*sip.ContactHeader)
	if !ok || c.Address.Wildcard {
		return
	}
	callID := ""
	if m, ok := msg.(interface{ CallID() *sip.CallIDHeader }); ok {
		callID = callIDOf(m)
	}
	if s.keepsAlias(c.Address, callID) {
		return
	}
	alias, needed := s.aliasFor(c.Address, callID, source, transport)
	_, sent := c.Address.UriParams.Get(aliasParam)
	// An alias a phone wrote itself would steer its dialog's requests
	// wherever it says: only ours count, or a trusted peer's.
	forged := sent && !s.isTrusted(sourceIP(source))
	if !needed && !forged {
		return
	}
	// The header may be shared with the original message: replace, never mutate.
	nc := c.Clone()
	if nc.Address.UriParams == nil {
		nc.Address.UriParams = sip.NewParams()
	}
	if needed {
		nc.Address.UriParams.Add(aliasParam, alias)
	} else {
		nc.Address.UriParams.Remove(aliasParam)
	}
	msg.(interface{ ReplaceHeader(sip.Header) }).ReplaceHeader(nc)
}

// contactAlias returns the alias value for a contact reached from source
// over transport, or false when the contact already leads there: same
// address and the same transport. A phone on TLS or TCP whose Contact names
// its connection's address but no transport parameter would otherwise be
// sent requests over UDP, to a port where nothing listens.
func contactAlias(contact sip.Uri, source, transport string) (string, bool) {
	host, port, err := net.SplitHostPort(source)
	if err != nil {
		return "", false
	}
	cport := contact.Port
	if cport == 0 {
		cport = sip.DefaultPort(transport)
	}
	if strings.Trim(contact.Host, "[]") == host && strconv.Itoa(cport) == port &&
		strings.EqualFold(contactTransport(contact), transport) {
		return "", false
	}
	return host + "~" + port + "~" + strings.ToLower(transport), true
}

// contactTransport is the transport a request to contact would use by
// itself (RFC 3263 without DNS): its transport parameter, else TLS for a
// sips URI and UDP for a sip one.
func contactTransport(contact sip.Uri) string {
	if contact.UriParams != nil {
		if tp, ok := contact.UriParams.Get("transport"); ok && tp != "" {
			return tp
		}
	}
	if contact.IsEncrypted() {
		return "TLS"
	}
	return "UDP"
}

// parseAlias reads an alias value back into destination and transport.
func parseAlias(v string) (dest, transport string, ok bool) {
	a, ok := parseFlowAlias(v)
	return a.dest, a.transport, ok
}

// flowAlias is an alias value read back.
type flowAlias struct {
	dest, transport string
	// holder is the "host:port" of the replica holding the connection,
	// for a held flow; signed is what mac signs.
	holder, signed, mac string
	raw                 string // the alias as it came
	relayMAC            string // the request's own signature (relayParam), when relayed out of a dialog
}

// parseFlowAlias reads "ip~port~transport" or, for a held connection,
// "ip~port~transport~holder-host~holder-port~signature".
func parseFlowAlias(v string) (flowAlias, bool) {
	parts := strings.Split(v, "~")
	if len(parts) != 3 && len(parts) != 6 {
		return flowAlias{}, false
	}
	if net.ParseIP(parts[0]) == nil || !validPort(parts[1]) {
		return flowAlias{}, false
	}
	tp := strings.ToUpper(parts[2])
	if tp != "UDP" && tp != "TCP" && tp != "TLS" {
		return flowAlias{}, false
	}
	a := flowAlias{dest: net.JoinHostPort(parts[0], parts[1]), transport: tp, raw: v}
	if len(parts) == 6 {
		if parts[3] == "" || !validPort(parts[4]) || len(parts[5]) != flowMACLen {
			return flowAlias{}, false
		}
		a.holder = net.JoinHostPort(parts[3], parts[4])
		a.signed, a.mac = strings.Join(parts[:5], "~"), parts[5]
	}
	return a, true
}

func validPort(s string) bool {
	p, err := strconv.Atoi(s)
	return err == nil && p > 0 && p <= 65535
}
