package sipproxy

import (
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// selfMatcher recognises this proxy in Route, Via and Request-URI hosts.
type selfMatcher struct {
	hosts     map[string]bool   // hosts matching on any of our listening ports
	hostPorts map[hostPort]bool // exact host:port aliases
	ports     map[int]bool
	domains   map[string]bool
	canonical string
}

// hostPort keys the exact aliases, so matching one builds no string.
type hostPort struct {
	host string
	port int
}

func newSelfMatcher(cfg Config, ports map[string]int) selfMatcher {
	m := selfMatcher{
		hosts:     map[string]bool{strings.ToLower(cfg.AdvertiseHost): true},
		hostPorts: map[hostPort]bool{},
		ports:     map[int]bool{},
		domains:   map[string]bool{},
		canonical: strings.ToLower(cfg.Domains[0]),
	}
	if host, _, err := net.SplitHostPort(cfg.ListenAddr); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
		m.hosts[strings.ToLower(host)] = true
	}
	for _, p := range ports {
		m.ports[p] = true
	}
	if host, portStr, err := net.SplitHostPort(cfg.ReplicaAddr); err == nil {
		if port, err := strconv.Atoi(portStr); err == nil {
			m.hostPorts[hostPort{host: strings.ToLower(host), port: port}] = true
		}
	}
	for _, a := range cfg.Aliases {
		if host, portStr, err := net.SplitHostPort(a); err == nil {
			if port, err := strconv.Atoi(portStr); err == nil {
				m.hostPorts[hostPort{host: strings.ToLower(host), port: port}] = true
			}
			continue
		}
		m.hosts[strings.ToLower(a)] = true
	}
	for _, d := range cfg.Domains {
		m.domains[strings.ToLower(d)] = true
	}
	return m
}

// isSelf reports whether host:port addresses this proxy. Port 0 means the
// default SIP port.
func (m selfMatcher) isSelf(host string, port int) bool {
	host = strings.ToLower(strings.Trim(host, "[]"))
	if port == 0 {
		port = sip.DefaultUdpPort
	}
	if m.hostPorts[hostPort{host: host, port: port}] {
		return true
	}
	return m.hosts[host] && m.ports[port]
}

// isLocalDomain reports whether host is a domain or address we serve.
func (m selfMatcher) isLocalDomain(host string) bool {
	host = strings.ToLower(strings.Trim(host, "[]"))
	if m.domains[host] || m.hosts[host] {
		return true
	}
	for hp := range m.hostPorts {
		if hp.host == host {
			return true
		}
	}
	return false
}

// aor returns the canonical "user@domain" for a URI of a local domain. Our
// own addresses map to the canonical (first) domain, so a phone registered
// as bob@example.com is reached by sip:bob@<proxy-ip> too.
func (m selfMatcher) aor(uri sip.Uri) string {
	host := strings.ToLower(strings.Trim(uri.Host, "[]"))
	if !m.domains[host] {
		host = m.canonical
	}
	return uriUser(uri) + "@" + host
}

// uriUser is a URI's user part with its escapes decoded: RFC 3261 19.1.4
// compares "%62ob" and "bob" as the same user, and a phone may write
// either. A malformed escape is kept as written.
func uriUser(uri sip.Uri) string {
	if !strings.Contains(uri.User, "%") {
		return uri.User
	}
	if user, err := url.PathUnescape(uri.User); err == nil {
		return user
	}
	return uri.User
}

// isTrusted reports whether the source address belongs to a trusted network.
func (s *Server) isTrusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range s.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// sourceIP extracts the IP of a "host:port" source.
func sourceIP(src string) netip.Addr {
	ap, err := netip.ParseAddrPort(src)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// blockedAgent reports whether the request's User-Agent is blocklisted.
func (s *Server) blockedAgent(req *sip.Request) bool {
	if len(s.cfg.UserAgentBlocklist) == 0 {
		return false
	}
	h := req.GetHeader("User-Agent")
	if h == nil {
		return false
	}
	ua := strings.ToLower(h.Value())
	for _, b := range s.cfg.UserAgentBlocklist {
		if b != "" && strings.Contains(ua, strings.ToLower(b)) {
			return true
		}
	}
	return false
}
