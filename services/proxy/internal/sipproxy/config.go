package sipproxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"callgrid.dev/services/proxy/internal/digestauth"
)

// Transaction linger (Config.TransactionLinger).
const (
	// DefaultTransactionLinger is T4, what Kamailio's tm keeps an answered
	// transaction for.
	DefaultTransactionLinger = 5 * time.Second
	// rfcTransactionLinger is 64*T1, the RFC's value and the longest allowed.
	rfcTransactionLinger = 32 * time.Second
)

// Defaults applied to zero-valued Config fields.
const (
	DefaultListenAddr       = "127.0.0.1:5060"
	DefaultTLSAddr          = "127.0.0.1:5061"
	DefaultInviteTimeout    = 181 * time.Second // Timer C: RFC 3261 16.6 step 11 wants it larger than 3 minutes
	DefaultBranchTimeout    = 32 * time.Second  // 64*T1: Timer B/F for a silent branch
	DefaultCancelWait       = 32 * time.Second  // how long a cancelled branch may take to answer 487
	DefaultMaxMessageSize   = 8192
	DefaultRealm            = "callgrid"
	DefaultNonceTTL         = 5 * time.Minute
	DefaultNonceTableSize   = 100_000
	DefaultMinExpires       = 60
	DefaultMaxExpires       = 3600
	DefaultDefaultExpires   = 3600
	DefaultMaxContacts      = 10
	DefaultRateLimitPerSec  = 50
	DefaultRateLimitBurst   = 100
	DefaultRateLimitBanTime = 30 * time.Second
	DefaultRateLimitSources = 65_536
	DefaultProbeInterval    = 10 * time.Second
	DefaultProbeTimeout     = 2 * time.Second
	DefaultProbeDownAfter   = 2
	DefaultProbeUpAfter     = 1
	DefaultDrainRetryAfter  = 5 * time.Second
	DefaultUserAgent        = "callgrid-proxy"
	DefaultGatewayPolicy    = PolicyRoundRobin
	DefaultGatewayWeight    = 1
	DefaultGatewayTransport = "udp"
	// DefaultTCPIdleTimeout suits phones that keep their connection with
	// re-registrations (registrar.max_expires is 3600s too) and keep-alives.
	DefaultTCPIdleTimeout = time.Hour
	// DefaultTCPFirstMessageTimeout is ample for a phone's first REGISTER,
	// TLS handshake included, even over a slow mobile link, and ends a
	// connection that only holds a descriptor 180 times sooner than the
	// idle timeout would.
	DefaultTCPFirstMessageTimeout = 20 * time.Second
	// DefaultCancelRelayTimeout is hundreds of bus round trips, and no
	// longer than T1, when a caller on UDP sends its CANCEL again: a CANCEL
	// nobody holds is answered 481 about then.
	DefaultCancelRelayTimeout = 500 * time.Millisecond
	// DefaultCancelRelayMaxPending CANCELs asking the other replicas at
	// once bound what unmatched ones cost the fleet: at most
	// max_pending / timeout of them a second per replica (128/s).
	DefaultCancelRelayMaxPending = 64
	defaultMaxForwardsAdded      = 70
	defaultConnectTimeout        = 5 * time.Second
	// udpSocketBuffer is the receive and send buffer asked for the UDP
	// socket: about a second of messages at several thousand calls/s.
	udpSocketBuffer = 4 << 20
)

// Config configures the SIP proxy. The zero value is a working local setup:
// UDP and TCP on 127.0.0.1:5060, domain "localhost", no users, no gateways.
type Config struct {
	// ListenAddr is the host:port for UDP and TCP (default 127.0.0.1:5060; port 0 picks one).
	ListenAddr string `yaml:"listen_addr"`
	// Transports lists the plain transports to serve: "udp", "tcp" (default both).
	Transports []string `yaml:"transports"`
	// TLS enables SIP over TLS when CertFile and KeyFile are set.
	TLS TLSConfig `yaml:"tls"`
	// AdvertiseHost is the host put in Via and Record-Route (default: the listen host).
	// Behind a load balancer it is the service address every replica shares.
	AdvertiseHost string `yaml:"advertise_host"`
	// Aliases are extra "host" or "host:port" values this proxy treats as itself
	// in Route headers: the service address, or the other replicas.
	Aliases []string `yaml:"aliases"`
	// ReplicaAddr is "host:port" where the other replicas reach this one
	// over TCP: its own address, not the shared service address (in
	// Kubernetes, the pod IP). When set, phones registered over TCP or TLS
	// are reached through the replica that holds their connection, and
	// the dialogs of their calls stay on it. The replicas must then share
	// auth.nonce_secret, which signs the flows they relay for each other.
	ReplicaAddr string `yaml:"replica_addr"`
	// Domains are the SIP domains served here (registrar, local users). The first
	// is canonical: AORs addressed to one of our IPs are stored under it.
	// Default: ["localhost"].
	Domains []string `yaml:"domains"`
	// TrustedNetworks are CIDRs (gateways, SBCs) whose requests skip digest
	// authentication and the rate limiter.
	TrustedNetworks []string `yaml:"trusted_networks"`
	// InviteTimeout is Timer C: how long a ringing INVITE branch may stay
	// without a final answer before it is cancelled with 408 (default 181s).
	InviteTimeout time.Duration `yaml:"invite_timeout"`
	// BranchTimeout is how long a branch may stay silent (no response at all)
	// before the next destination is tried (default 32s, Timer B/F).
	BranchTimeout time.Duration `yaml:"branch_timeout"`
	// CancelWait bounds the wait for a cancelled branch's final answer (default 32s).
	CancelWait time.Duration `yaml:"cancel_wait"`
	// TransactionLinger is how long a transaction is kept once answered, to
	// absorb retransmissions: Timer J (a non-INVITE server transaction),
	// L and M (an INVITE answered 2xx, server and client side). RFC 3261
	// and 6026 say 64*T1 = 32s; the default is T4 = 5s, what Kamailio's tm
	// keeps a transaction for. Every call's transactions stay in memory that
	// long, so at 4,000 calls/s 32s means gigabytes of heap and collections
	// that stall the socket's reader. Later retransmissions still work: a
	// 2xx is relayed statelessly along its Vias, a request is forwarded
	// again and answered by the next hop. sipgo's timers are process-wide, so
	// ApplyTransactionLinger sets it once at start; New does not (default 5s).
	TransactionLinger time.Duration `yaml:"transaction_linger"`
	// MaxMessageSize is the largest accepted SIP message in bytes (default 8192).
	MaxMessageSize int `yaml:"max_message_size"`
	// UDPMTU is the size in bytes above which a request forwarded to a UDP
	// target goes over udp_mtu_try_proto instead, when the target allows
	// it (Kamailio's udp_mtu; default 1300, RFC 3261 18.1.1's figure for
	// an unknown path MTU). Which targets allow it: a gateway whose
	// transport is left unset (if no TCP connection can be made there, the
	// request goes over UDP after all), and a phone registered over UDP,
	// not behind NAT, whose Contact says transport=tcp. Every other request
	// stays on UDP whatever its size, and IP fragments it; responses always
	// go back the way their request came.
	UDPMTU int `yaml:"udp_mtu"`
	// UDPMTUTryProto is the transport tried for such a request: "tcp"
	// (default) or "udp", which keeps every request on UDP (Kamailio's
	// udp_mtu_try_proto). TCP is only tried when this proxy serves tcp.
	UDPMTUTryProto string `yaml:"udp_mtu_try_proto"`
	// UDPMaxMessageSize is the largest message sent over UDP, in bytes
	// (default 65507, what one IPv4 datagram carries, as Kamailio sends).
	// A larger request is answered 513; a larger response is not sent.
	// sipgo's limit is process-wide, so ApplyUDPLimits sets it once at
	// start, with the receive buffer that max_message_size needs; New
	// does not.
	UDPMaxMessageSize int `yaml:"udp_max_message_size"`
	// UserAgentBlocklist drops requests whose User-Agent contains any entry
	// (case-insensitive), e.g. "friendly-scanner", "sipvicious".
	UserAgentBlocklist []string `yaml:"user_agent_blocklist"`
	// DrainRetryAfter is the Retry-After sent with 503 while draining (default 5s).
	DrainRetryAfter time.Duration `yaml:"drain_retry_after"`
	// UserAgent is our User-Agent/Server token (default "callgrid-proxy").
	UserAgent string `yaml:"user_agent"`
	// TCPIdleTimeout closes a TCP or TLS connection a peer opened to this
	// proxy once nothing has crossed it, either way, for this long (default
	// 1h; negative: never), so dead or abandoned peers do not hold
	// descriptors forever: Kamailio's tcp_connection_lifetime. RFC 5626
	// CRLF keep-alives count as traffic. Phones that send no keep-alives
	// need it above their re-registration interval, or they cannot be
	// called between re-registrations. It must exceed invite_timeout: while
	// a callee rings, nothing crosses the caller's connection.
	TCPIdleTimeout time.Duration `yaml:"tcp_idle_timeout"`
	// TCPFirstMessageTimeout closes a TCP or TLS connection a peer opened
	// when it has not delivered one complete SIP message this long after
	// it was accepted, the TLS handshake included (default 20s; negative:
	// never), so a peer cannot hold descriptors for the idle timeout by
	// connecting and sending nothing, or never finishing its handshake:
	// Kamailio's tls handshake and tcp_connect_timeout bounds. CRLF
	// keep-alives are not a message, though they keep the idle timeout
	// away. At least 100ms.
	TCPFirstMessageTimeout time.Duration `yaml:"tcp_first_message_timeout"`
	// CancelRelayTimeout bounds how long a replica that holds no
	// transaction for a CANCEL waits for another replica, asked over the
	// bus, to say it holds the INVITE and cancelled it: the CANCEL is then
	// answered 200, and 481 when none did in time (default 500ms;
	// negative: never ask, answer 481 at once; at most 5s). A load
	// balancer may send the CANCEL to any replica (RFC 3261 16.10).
	CancelRelayTimeout time.Duration `yaml:"cancel_relay_timeout"`
	// CancelRelayMaxPending is how many CANCELs this replica may have
	// asking the others at once (default 64); more are answered 481 at
	// once, so a flood of CANCELs that match nothing costs every replica a
	// bounded amount of work.
	CancelRelayMaxPending int `yaml:"cancel_relay_max_pending"`

	Auth      AuthConfig      `yaml:"auth"`
	Registrar RegistrarConfig `yaml:"registrar"`
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	// Dialplan rules are tried in order after registered users; the first match wins.
	Dialplan      []DialplanRule `yaml:"dialplan"`
	GatewayGroups []GatewayGroup `yaml:"gateway_groups"`
	Probe         ProbeConfig    `yaml:"probe"`
	// GatewayFailure takes gateways out of rotation when calls to them
	// fail; a group's own failure block overrides it field by field.
	GatewayFailure GatewayFailure `yaml:"gateway_failure"`
}

// TLSConfig enables the TLS listener.
type TLSConfig struct {
	// Addr is host:port for TLS (default 127.0.0.1:5061).
	Addr     string `yaml:"addr"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether a certificate is configured.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// AuthConfig configures digest authentication.
type AuthConfig struct {
	// Realm is the digest realm (default "callgrid").
	Realm string `yaml:"realm"`
	// NonceSecret signs nonces; replicas must share it (default: random per process).
	NonceSecret string `yaml:"nonce_secret"`
	// NonceTTL is how long a nonce is accepted (default 5m).
	NonceTTL time.Duration `yaml:"nonce_ttl"`
	// NonceTableSize bounds the nonce-count replay table (default 100000).
	NonceTableSize int `yaml:"nonce_table_size"`
	// Algorithms offered, preferred first: "SHA-256", "MD5" (default both, SHA-256 first, RFC 8760).
	Algorithms []string `yaml:"algorithms"`
	// Users are the subscribers and their HA1 hashes, H(username:realm:password).
	Users []User `yaml:"users"`
}

// User is one subscriber. At least one HA1 must be set; a challenge with an
// algorithm is only answered for users who have that algorithm's HA1.
type User struct {
	Username  string `yaml:"username"`
	HA1MD5    string `yaml:"ha1_md5"`
	HA1SHA256 string `yaml:"ha1_sha256"`
}

// RegistrarConfig bounds registrations. Values are seconds as in SIP Expires.
type RegistrarConfig struct {
	// MinExpires: shorter non-zero requests get 423 with Min-Expires (default 60).
	MinExpires int `yaml:"min_expires"`
	// MaxExpires caps granted expiry (default 3600).
	MaxExpires int `yaml:"max_expires"`
	// DefaultExpires applies when the REGISTER names none (default 3600).
	DefaultExpires int `yaml:"default_expires"`
	// MaxContacts is how many contacts an AOR may have bound (default 10).
	// A REGISTER whose own contacts are more is refused whole with 503;
	// one that fits but would take the AOR past it evicts the AOR's other
	// bindings, least recently registered first.
	MaxContacts int `yaml:"max_contacts"`
}

// RateLimitConfig is the per-source-IP request limiter (token bucket).
type RateLimitConfig struct {
	// Disabled turns the limiter off.
	Disabled bool `yaml:"disabled"`
	// RequestsPerSecond is the sustained rate per source IP (default 50).
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	// Burst is the bucket size (default 100).
	Burst int `yaml:"burst"`
	// BanTime keeps a source blocked after it overflowed (default 30s).
	BanTime time.Duration `yaml:"ban_time"`
	// MaxSources bounds the tracked sources (default 65536).
	MaxSources int `yaml:"max_sources"`
}

// DialplanRule sends matching Request-URI users to a gateway group or to a
// media node's built-in service. Exactly one of Prefix and Regex is set, and
// exactly one of Group and Service. Strip removes leading digits and
// AddPrefix prepends digits after a match, before the call goes to the group.
type DialplanRule struct {
	Name      string `yaml:"name"`
	Prefix    string `yaml:"prefix"`
	Regex     string `yaml:"regex"`
	Strip     int    `yaml:"strip"`
	AddPrefix string `yaml:"add_prefix"`
	Group     string `yaml:"group"`
	// Service answers matching calls with a media node's built-in service:
	// "echo" (the caller hears themself) or "tone".
	Service string `yaml:"service"`
	// Media overrides the proxy's media mode for calls this rule routes:
	// "anchor" or "bypass" (default: the proxy's media.mode).
	Media string `yaml:"media"`
}

// Media modes and built-in services a dialplan rule can name.
const (
	MediaModeAnchor = "anchor"
	MediaModeBypass = "bypass"
	ServiceEcho     = "echo"
	ServiceTone     = "tone"
)

// GatewayGroup is a set of gateways with a selection policy.
type GatewayGroup struct {
	Name string `yaml:"name"`
	// Policy: "round_robin" (default), "weighted" or "hash" (over Call-ID).
	Policy   string    `yaml:"policy"`
	Gateways []Gateway `yaml:"gateways"`
	// Failure overrides the global gateway_failure for this group, field
	// by field: a field left unset takes the global value.
	Failure GatewayFailure `yaml:"failure"`
}

// Gateway is one trunk peer.
type Gateway struct {
	Name string `yaml:"name"`
	// Addr is host:port.
	Addr string `yaml:"addr"`
	// Transport: "udp", "tcp" or "tls". Unset is UDP, except that a
	// request larger than udp_mtu tries TCP first; "udp" keeps every
	// request on UDP.
	Transport string `yaml:"transport"`
	// Weight for the weighted policy (default 1).
	Weight int `yaml:"weight"`

	// transportUnset records that Transport was left to its default, which
	// lets a large request try TCP (see Config.UDPMTU).
	transportUnset bool
}

// ProbeConfig drives OPTIONS health checks of gateways.
type ProbeConfig struct {
	// Disabled turns probing off; gateways are then always considered up.
	Disabled bool `yaml:"disabled"`
	// Interval between probes of one gateway (default 10s).
	Interval time.Duration `yaml:"interval"`
	// Timeout for one probe (default 2s).
	Timeout time.Duration `yaml:"timeout"`
	// DownAfter consecutive failures mark a gateway down (default 2).
	DownAfter int `yaml:"down_after"`
	// UpAfter consecutive successes mark it up again (default 1).
	UpAfter int `yaml:"up_after"`
}

// Gateway selection policies.
const (
	PolicyRoundRobin = "round_robin"
	PolicyWeighted   = "weighted"
	PolicyHash       = "hash"
)

// WithDefaults returns a copy with every zero field set to its default.
func (c Config) WithDefaults() Config {
	setDefault(&c.ListenAddr, DefaultListenAddr)
	if len(c.Transports) == 0 {
		c.Transports = []string{"udp", "tcp"}
	}
	if c.TLS.Enabled() {
		setDefault(&c.TLS.Addr, DefaultTLSAddr)
	}
	if c.AdvertiseHost == "" {
		if host, _, err := net.SplitHostPort(c.ListenAddr); err == nil {
			c.AdvertiseHost = host
		}
	}
	if len(c.Domains) == 0 {
		c.Domains = []string{"localhost"}
	}
	setDefault(&c.InviteTimeout, DefaultInviteTimeout)
	setDefault(&c.BranchTimeout, DefaultBranchTimeout)
	setDefault(&c.CancelWait, DefaultCancelWait)
	setDefault(&c.TransactionLinger, DefaultTransactionLinger)
	setDefault(&c.MaxMessageSize, DefaultMaxMessageSize)
	setDefault(&c.UDPMTU, DefaultUDPMTU)
	setDefault(&c.UDPMTUTryProto, DefaultUDPMTUTryProto)
	setDefault(&c.UDPMaxMessageSize, DefaultUDPMaxMessageSize)
	setDefault(&c.DrainRetryAfter, DefaultDrainRetryAfter)
	setDefault(&c.UserAgent, DefaultUserAgent)
	setDefault(&c.TCPIdleTimeout, DefaultTCPIdleTimeout)
	setDefault(&c.TCPFirstMessageTimeout, DefaultTCPFirstMessageTimeout)
	setDefault(&c.CancelRelayTimeout, DefaultCancelRelayTimeout)
	setDefault(&c.CancelRelayMaxPending, DefaultCancelRelayMaxPending)

	setDefault(&c.Auth.Realm, DefaultRealm)
	setDefault(&c.Auth.NonceTTL, DefaultNonceTTL)
	setDefault(&c.Auth.NonceTableSize, DefaultNonceTableSize)
	if len(c.Auth.Algorithms) == 0 {
		c.Auth.Algorithms = []string{"SHA-256", "MD5"}
	}
	setDefault(&c.Registrar.MinExpires, DefaultMinExpires)
	setDefault(&c.Registrar.MaxExpires, DefaultMaxExpires)
	setDefault(&c.Registrar.DefaultExpires, DefaultDefaultExpires)
	setDefault(&c.Registrar.MaxContacts, DefaultMaxContacts)
	setDefault(&c.RateLimit.RequestsPerSecond, DefaultRateLimitPerSec)
	setDefault(&c.RateLimit.Burst, DefaultRateLimitBurst)
	setDefault(&c.RateLimit.BanTime, DefaultRateLimitBanTime)
	setDefault(&c.RateLimit.MaxSources, DefaultRateLimitSources)
	setDefault(&c.Probe.Interval, DefaultProbeInterval)
	setDefault(&c.Probe.Timeout, DefaultProbeTimeout)
	setDefault(&c.Probe.DownAfter, DefaultProbeDownAfter)
	setDefault(&c.Probe.UpAfter, DefaultProbeUpAfter)
	c.GatewayFailure = c.GatewayFailure.withDefaults()

	groups := make([]GatewayGroup, len(c.GatewayGroups))
	for i, g := range c.GatewayGroups {
		setDefault(&g.Policy, DefaultGatewayPolicy)
		g.Failure = g.Failure.over(c.GatewayFailure)
		gws := make([]Gateway, len(g.Gateways))
		for j, gw := range g.Gateways {
			if gw.Transport == "" {
				gw.Transport, gw.transportUnset = DefaultGatewayTransport, true
			}
			setDefault(&gw.Weight, DefaultGatewayWeight)
			setDefault(&gw.Name, gw.Addr)
			gws[j] = gw
		}
		g.Gateways = gws
		groups[i] = g
	}
	c.GatewayGroups = groups
	return c
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// Validate checks the configuration after defaults and names the failing field.
func (c Config) Validate() error {
	given := c
	c = c.WithDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("sipproxy config %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		bad("listen_addr", "%v", err)
	}
	for i, tp := range c.Transports {
		if tp != "udp" && tp != "tcp" {
			bad(fmt.Sprintf("transports[%d]", i), "%q is not udp or tcp", tp)
		}
	}
	if c.TLS.Enabled() {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			bad("tls", "cert_file and key_file must both be set")
		}
		if _, _, err := net.SplitHostPort(c.TLS.Addr); err != nil {
			bad("tls.addr", "%v", err)
		}
	}
	if c.ReplicaAddr != "" {
		if host, port, err := net.SplitHostPort(c.ReplicaAddr); err != nil || host == "" || port == "0" {
			bad("replica_addr", "%q is not a host:port other replicas can reach", c.ReplicaAddr)
		}
		if !slices.Contains(c.Transports, "tcp") {
			bad("replica_addr", "needs the tcp transport, which the replicas relay over")
		}
		if c.Auth.NonceSecret == "" {
			bad("replica_addr", "needs auth.nonce_secret, shared by the replicas: it signs the flows they relay")
		}
	}
	for i, cidr := range c.TrustedNetworks {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			bad(fmt.Sprintf("trusted_networks[%d]", i), "%v", err)
		}
	}
	if c.MaxMessageSize < 1024 || c.MaxMessageSize > 65535 {
		bad("max_message_size", "%d outside 1024..65535", c.MaxMessageSize)
	}
	c.validateUDPLimits(bad)
	if c.InviteTimeout < time.Second {
		bad("invite_timeout", "%v below 1s", c.InviteTimeout)
	}
	if c.BranchTimeout < 100*time.Millisecond {
		bad("branch_timeout", "%v below 100ms", c.BranchTimeout)
	}
	if c.TransactionLinger < time.Second || c.TransactionLinger > rfcTransactionLinger {
		bad("transaction_linger", "%v outside 1s..%v", c.TransactionLinger, rfcTransactionLinger)
	}
	if c.TCPIdleTimeout > 0 && c.TCPIdleTimeout <= c.InviteTimeout {
		bad("tcp_idle_timeout", "%v not above invite_timeout %v: a ringing call's caller connection carries nothing that long", c.TCPIdleTimeout, c.InviteTimeout)
	}
	if f := c.TCPFirstMessageTimeout; f > 0 && f < 100*time.Millisecond {
		bad("tcp_first_message_timeout", "%v below 100ms", f)
	}
	if r := c.CancelRelayTimeout; r > 0 && (r < 10*time.Millisecond || r > maxCancelRelayTimeout) {
		bad("cancel_relay_timeout", "%v outside 10ms..%v", r, maxCancelRelayTimeout)
	}
	if c.CancelRelayMaxPending < 1 {
		bad("cancel_relay_max_pending", "%d below 1", c.CancelRelayMaxPending)
	}
	for i, a := range c.Auth.Algorithms {
		if _, err := digestauth.ParseAlgorithm(a); err != nil {
			bad(fmt.Sprintf("auth.algorithms[%d]", i), "%v", err)
		}
	}
	seenUser := map[string]bool{}
	for i, u := range c.Auth.Users {
		field := fmt.Sprintf("auth.users[%d]", i)
		switch {
		case u.Username == "":
			bad(field+".username", "empty")
		case seenUser[u.Username]:
			bad(field+".username", "duplicate %q", u.Username)
		}
		seenUser[u.Username] = true
		if u.HA1MD5 == "" && u.HA1SHA256 == "" {
			bad(field, "needs ha1_md5 or ha1_sha256")
		}
		if u.HA1MD5 != "" && !isHex(u.HA1MD5, 32) {
			bad(field+".ha1_md5", "not 32 hex digits")
		}
		if u.HA1SHA256 != "" && !isHex(u.HA1SHA256, 64) {
			bad(field+".ha1_sha256", "not 64 hex digits")
		}
	}
	r := c.Registrar
	if r.MinExpires > r.MaxExpires {
		bad("registrar.min_expires", "%d above max_expires %d", r.MinExpires, r.MaxExpires)
	}
	if r.MaxContacts < 1 {
		bad("registrar.max_contacts", "%d below 1", r.MaxContacts)
	}
	if c.RateLimit.RequestsPerSecond < 0 || c.RateLimit.Burst < 1 {
		bad("rate_limit", "requests_per_second must be >= 0 and burst >= 1")
	}
	if c.Probe.DownAfter < 1 || c.Probe.UpAfter < 1 {
		bad("probe", "down_after and up_after must be >= 1")
	}
	c.GatewayFailure.validate("gateway_failure", bad)
	groups := map[string]bool{}
	for i, g := range c.GatewayGroups {
		field := fmt.Sprintf("gateway_groups[%d]", i)
		// The group's own settings: what it inherits was checked above.
		given.GatewayGroups[i].Failure.validate(field+".failure", bad)
		if g.Name == "" || groups[g.Name] {
			bad(field+".name", "empty or duplicate %q", g.Name)
		}
		groups[g.Name] = true
		if g.Policy != PolicyRoundRobin && g.Policy != PolicyWeighted && g.Policy != PolicyHash {
			bad(field+".policy", "%q is not round_robin, weighted or hash", g.Policy)
		}
		if len(g.Gateways) == 0 {
			bad(field+".gateways", "empty")
		}
		for j, gw := range g.Gateways {
			gf := fmt.Sprintf("%s.gateways[%d]", field, j)
			if _, _, err := net.SplitHostPort(gw.Addr); err != nil {
				bad(gf+".addr", "%v", err)
			}
			if tp := strings.ToLower(gw.Transport); tp != "udp" && tp != "tcp" && tp != "tls" {
				bad(gf+".transport", "%q is not udp, tcp or tls", gw.Transport)
			}
			if gw.Weight < 1 {
				bad(gf+".weight", "%d below 1", gw.Weight)
			}
		}
	}
	for i, rule := range c.Dialplan {
		field := fmt.Sprintf("dialplan[%d]", i)
		if (rule.Prefix == "") == (rule.Regex == "") {
			bad(field, "exactly one of prefix and regex must be set")
		}
		if rule.Regex != "" {
			if _, err := regexp.Compile(rule.Regex); err != nil {
				bad(field+".regex", "%v", err)
			}
		}
		if rule.Strip < 0 {
			bad(field+".strip", "negative")
		}
		switch {
		case rule.Service != "" && rule.Group != "":
			bad(field, "group and service are exclusive")
		case rule.Service != "" && rule.Service != ServiceEcho && rule.Service != ServiceTone:
			bad(field+".service", "%q is not echo or tone", rule.Service)
		case rule.Service != "" && rule.Media == MediaModeBypass:
			bad(field+".media", "a service rule needs the media anchored")
		case rule.Service == "" && !groups[rule.Group]:
			bad(field+".group", "unknown gateway group %q", rule.Group)
		}
		if rule.Media != "" && rule.Media != MediaModeAnchor && rule.Media != MediaModeBypass {
			bad(field+".media", "%q is not anchor or bypass", rule.Media)
		}
	}
	return errors.Join(errs...)
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}
