// Package sipproxy is the SIP proxy core: a transaction-stateful proxy with a
// registrar, digest authentication, a dialplan with gateway groups, and
// per-source protection. It keeps no per-call state: what in-dialog requests
// need travels in Route/Record-Route and Contact parameters, so any replica
// can carry any request of a dialog.
package sipproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/services/proxy/internal/digestauth"
	"callgrid.dev/services/proxy/internal/location"
)

// Option customises a Server.
type Option func(*options)

type options struct {
	store  location.Store
	now    func() time.Time
	media  *MediaOptions
	bus    *bus.Client
	calls  jetstream.KeyValue
	leaves *NodeLeaves
}

// WithLocationStore sets the registration store (default: in-memory, which is
// only correct for a single replica). If the store has a Run(ctx) error
// method, Server.Run runs it and waits for it.
func WithLocationStore(s location.Store) Option {
	return func(o *options) { o.store = s }
}

// WithClock replaces time.Now for rate limiting and nonces (tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// Server is one proxy replica.
type Server struct {
	cfg Config
	log zerolog.Logger
	m   *metrics
	now func() time.Time

	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	tpl    *sip.TransportLayer
	txl    *sip.TransactionLayer
	parser *sip.Parser
	// inviteTxs holds sipgo's live INVITE server transactions by key, for
	// takeACK (an ACK matching one belongs to that transaction) and for the
	// CANCELs other replicas offer (proxy_cancel_relay.go).
	inviteTxs sync.Map
	// cancelConn carries the CANCELs offered to and by the other replicas,
	// once Run opened it (proxy_cancel_relay.go).
	cancelConn *nats.Conn
	// cancelConnClosing is set once this replica closes cancelConn itself,
	// so its handlers do not report that as a loss of the relay.
	cancelConnClosing atomic.Bool
	// cancelSlots bounds the CANCELs offered to the others at once.
	cancelSlots chan struct{}
	// cancelAnswers answers retransmissions of the CANCELs offered.
	cancelAnswers *cancelAnswers
	// abandoned hangs up late answers to branches given up on.
	abandoned *abandonedBranches

	loc      location.Store
	auth     *authenticator
	dialplan *dialplan
	groups   map[string]*gatewayGroup
	limiter  *rateLimiter
	trusted  []netip.Prefix
	self     selfMatcher
	flowKey  []byte // signs the flows the replicas relay for each other
	branches *branchSigner

	udpConn  net.PacketConn
	tcpLn    *streamListener
	tlsLn    *streamListener
	udpLaddr sip.Addr
	ports    map[string]int // lower-case transport -> listening port

	// media is nil when calls bypass the fleet.
	media  *MediaOptions
	bus    *bus.Client
	events chan pendingEvent
	calls  jetstream.KeyValue
	leaves *NodeLeaves

	// mtuTriesTCP: a request too large for UDP may go over TCP, which
	// this replica serves (Config.UDPMTUTryProto).
	mtuTriesTCP bool
	// tcpFailures keeps such requests off TCP where it just failed.
	tcpFailures *tcpFailures

	draining atomic.Bool
	active   activeTracker
	handlers *handlerPool
}

// New builds a Server and opens its listening sockets, so bind errors surface
// here and Addr is known before Run. Run (or a cancelled Run) closes them.
func New(cfg Config, log zerolog.Logger, reg prometheus.Registerer, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.store == nil {
		o.store = location.NewMemoryStore(o.now)
	}
	s := &Server{
		cfg:      cfg,
		log:      log.With().Str("component", "sipproxy").Logger(),
		now:      o.now,
		loc:      o.store,
		ports:    make(map[string]int),
		handlers: newHandlerPool(),

		tcpFailures:   newTCPFailures(o.now),
		cancelSlots:   make(chan struct{}, cfg.CancelRelayMaxPending),
		cancelAnswers: newCancelAnswers(cfg.TransactionLinger, o.now),
		abandoned:     newAbandonedBranches(64*sip.T1, o.now),
	}
	m, err := newMetrics(reg, s.loc.Count)
	if err != nil {
		return nil, err
	}
	s.m = m
	for _, cidr := range cfg.TrustedNetworks {
		s.trusted = append(s.trusted, netip.MustParsePrefix(cidr).Masked())
	}
	if !cfg.RateLimit.Disabled {
		s.limiter = newRateLimiter(cfg.RateLimit, o.now)
	}
	if s.auth, err = newAuthenticator(cfg.Auth, o.now); err != nil {
		return nil, err
	}
	s.flowKey = flowKey(cfg.Auth.NonceSecret)
	s.branches = newBranchSigner(cfg.Auth.NonceSecret)
	if s.dialplan, err = newDialplan(cfg.Dialplan); err != nil {
		return nil, err
	}
	s.groups = newGatewayGroups(cfg.GatewayGroups, s.m)
	if o.media != nil && o.media.Control != nil {
		m := o.media.withDefaults()
		if m.Mode != MediaModeAnchor && m.Mode != MediaModeBypass {
			return nil, fmt.Errorf("media mode %q is not anchor or bypass", m.Mode)
		}
		s.media = &m
	}
	s.bus = o.bus
	if s.bus != nil {
		s.events = make(chan pendingEvent, eventQueueSize)
	}
	s.calls, s.leaves = o.calls, o.leaves

	parser := sip.NewParser()
	parser.MaxMessageLength = cfg.MaxMessageSize
	s.parser = parser
	slogger := newSipgoLogger(s.log, func() { s.m.dropped.WithLabelValues("unparsable").Inc() })
	s.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent(cfg.UserAgent),
		sipgo.WithUserAgentHostname(cfg.AdvertiseHost),
		sipgo.WithUserAgentParser(parser),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(slogger),
			sip.WithTransportLayerReadFilter(s.readFilter),
		),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(slogger),
			sip.WithTransactionLayerUnhandledResponseHandler(s.handleStrayResponse),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("create sip user agent: %w", err)
	}
	s.srv, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(slogger))
	if err != nil {
		_ = s.ua.Close()
		return nil, fmt.Errorf("create sip server: %w", err)
	}
	s.tpl = s.ua.TransportLayer()
	s.txl = s.ua.TransactionLayer()
	s.srv.OnNoRoute(s.handleRequest)
	s.tpl.OnMessage(s.noteStreamMessage)

	if err := s.listenRetrying(); err != nil {
		s.closeListeners()
		_ = s.ua.Close()
		return nil, err
	}
	s.self = newSelfMatcher(cfg, s.ports)
	_, servesTCP := s.ports["tcp"]
	s.mtuTriesTCP = strings.EqualFold(cfg.UDPMTUTryProto, "tcp") && servesTCP
	return s, nil
}

// pickPortAttempts bounds the retries when the port is picked (0): the
// port UDP got may already be taken for TCP by someone else.
const pickPortAttempts = 8

// listenRetrying opens the listeners; with a picked port it tries again on
// a new one when TCP cannot have the port UDP got.
func (s *Server) listenRetrying() error {
	_, port, _ := net.SplitHostPort(s.cfg.ListenAddr)
	for attempt := 1; ; attempt++ {
		err := s.listen()
		if err == nil || port != "0" || attempt == pickPortAttempts || !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		s.closeListeners()
		s.udpConn, s.tcpLn, s.tlsLn = nil, nil, nil
		clear(s.ports)
	}
}

func (s *Server) listen() error {
	for _, tp := range s.cfg.Transports {
		switch tp {
		case "udp":
			addr, err := net.ResolveUDPAddr("udp", s.cfg.ListenAddr)
			if err != nil {
				return fmt.Errorf("resolve udp %s: %w", s.cfg.ListenAddr, err)
			}
			conn, err := net.ListenUDP("udp", addr)
			if err != nil {
				return fmt.Errorf("listen udp %s: %w", s.cfg.ListenAddr, err)
			}
			// One socket carries every UDP message of this replica; a burst
			// larger than the kernel's default buffer (~200 KiB) is dropped
			// before it is read, and both sides then retransmit. The kernel
			// caps the request at net.core.rmem_max/wmem_max.
			_ = conn.SetReadBuffer(udpSocketBuffer)
			_ = conn.SetWriteBuffer(udpSocketBuffer)
			s.udpConn = conn
			local := conn.LocalAddr().(*net.UDPAddr)
			s.ports["udp"] = local.Port
			// Requests we forward over UDP must leave from the listening socket,
			// so Via, Record-Route and the NAT pinholes phones opened all match.
			s.udpLaddr = sip.Addr{IP: local.IP, Port: local.Port, Hostname: local.IP.String()}
		case "tcp":
			ln, err := net.Listen("tcp", s.tcpListenAddr())
			if err != nil {
				return fmt.Errorf("listen tcp %s: %w", s.cfg.ListenAddr, err)
			}
			s.tcpLn = s.streamListener(ln, "tcp")
			s.ports["tcp"] = ln.Addr().(*net.TCPAddr).Port
		}
	}
	if s.cfg.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("load tls certificate: %w", err)
		}
		ln, err := tls.Listen("tcp", s.cfg.TLS.Addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err != nil {
			return fmt.Errorf("listen tls %s: %w", s.cfg.TLS.Addr, err)
		}
		s.tlsLn = s.streamListener(ln, "tls")
		s.ports["tls"] = ln.Addr().(*net.TCPAddr).Port
	}
	return nil
}

// streamListener wraps a TCP or TLS listener: connections idle for
// tcp_idle_timeout, or with no message within tcp_first_message_timeout,
// are closed, and a shortage of descriptors does not end the serving.
func (s *Server) streamListener(ln net.Listener, transport string) *streamListener {
	idleClosed := s.m.idleClosed.WithLabelValues(transport)
	firstMsgClosed := s.m.firstMsgClosed.WithLabelValues(transport)
	return newStreamListener(ln, transport, streamTimeouts{
		idle: s.cfg.TCPIdleTimeout,
		onIdle: func(conn net.Conn) {
			idleClosed.Inc()
			s.log.Debug().Str("transport", transport).Str("remote", conn.RemoteAddr().String()).
				Dur("idle", s.cfg.TCPIdleTimeout).Msg("closing idle connection")
		},
		firstMessage: s.cfg.TCPFirstMessageTimeout,
		onNoFirstMessage: func(conn net.Conn) {
			firstMsgClosed.Inc()
			s.log.Debug().Str("transport", transport).Str("remote", conn.RemoteAddr().String()).
				Dur("within", s.cfg.TCPFirstMessageTimeout).Msg("closing connection that sent no message")
		},
	}, s.log)
}

// noteStreamMessage is told of every message the transports parse, on the
// goroutine that read it: one over a connection a peer opened lifts that
// connection's first-message timeout.
func (s *Server) noteStreamMessage(msg sip.Message) {
	var ln *streamListener
	switch msg.Transport() {
	case "TCP":
		ln = s.tcpLn
	case "TLS":
		ln = s.tlsLn
	}
	if ln != nil {
		ln.messageFrom(msg.Source())
	}
}

// tcpListenAddr reuses the UDP port when the configured port is 0, so both
// transports share one port as SIP peers expect.
func (s *Server) tcpListenAddr() string {
	host, port, _ := net.SplitHostPort(s.cfg.ListenAddr)
	if port == "0" && s.ports["udp"] != 0 {
		port = strconv.Itoa(s.ports["udp"])
	}
	return net.JoinHostPort(host, port)
}

// Addr returns the bound "host:port" of a transport ("udp", "tcp", "tls"),
// or "" if it is not served.
func (s *Server) Addr(transport string) string {
	port, ok := s.ports[strings.ToLower(transport)]
	if !ok {
		return ""
	}
	return net.JoinHostPort(s.cfg.AdvertiseHost, strconv.Itoa(port))
}

// Drain makes the replica refuse new dialogs and registrations with 503 and
// answer OPTIONS with 503, while in-dialog requests and running transactions
// finish. It is idempotent.
func (s *Server) Drain() {
	if !s.draining.Swap(true) {
		s.log.Info().Msg("draining")
	}
}

// Draining reports whether Drain was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// InFlight returns the number of requests being handled, for drain progress.
func (s *Server) InFlight() int { return int(s.active.count.Load()) }

// Run serves until ctx ends, then closes the sockets, terminates transactions
// and returns after every goroutine it started has exited.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timeouts *mediaTimeouts
	if s.bus != nil && s.media != nil {
		var err error
		if timeouts, err = s.openMediaTimeouts(ctx); err != nil {
			s.closeListeners()
			_ = s.ua.Close()
			if ctx.Err() != nil {
				// Stopped while starting: a clean stop, not a failure.
				return nil
			}
			return err
		}
	}
	var cancelSub *nats.Subscription
	if s.relaysCancels() {
		var err error
		if s.cancelConn, cancelSub, err = s.openCancelRelay(); err != nil {
			s.closeListeners()
			_ = s.ua.Close()
			return err
		}
	}

	var (
		wg     sync.WaitGroup
		errMu  sync.Mutex
		runErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if runErr == nil {
			runErr = err
		}
		errMu.Unlock()
		cancel()
	}
	serve := func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("serve %s: %w", name, err))
			}
		})
	}
	if s.udpConn != nil {
		serve("udp", func() error { return s.srv.ServeUDP(s.udpConn) })
		s.awaitUDPListener(ctx)
	}
	if s.tcpLn != nil {
		serve("tcp", func() error { return s.srv.ServeTCP(s.tcpLn) })
	}
	if s.tlsLn != nil {
		serve("tls", func() error { return s.srv.ServeTLS(s.tlsLn) })
	}
	// After the listeners, so a backlog of timeouts finds them serving; in
	// its own group, which ends before the user agent closes, so that no
	// hang-up starts on a closed transport.
	var consumers sync.WaitGroup
	if timeouts != nil {
		consumers.Go(func() { timeouts.run(ctx) })
	}
	if runner, ok := s.loc.(interface{ Run(context.Context) error }); ok {
		wg.Go(func() {
			if err := runner.Run(ctx); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("run location store: %w", err))
			}
		})
	}
	wg.Go(func() { s.probeLoop(ctx) })
	wg.Go(func() { s.housekeeping(ctx) })
	if s.events != nil {
		wg.Go(func() { s.publishEvents(ctx) })
	}
	if s.media != nil && s.calls != nil && s.leaves != nil {
		wg.Go(func() { s.reapOrphans(ctx) })
	}
	s.log.Info().Interface("ports", s.ports).Str("advertise", s.cfg.AdvertiseHost).Msg("sip proxy serving")

	<-ctx.Done()
	consumers.Wait()
	if cancelSub != nil {
		// Offers already taken are finished while transactions still live;
		// no new one comes in.
		dctx, dcancel := context.WithTimeout(context.Background(), cancelRelayDrain)
		if err := bus.Drain(dctx, cancelSub); err != nil {
			s.log.Debug().Err(err).Msg("drain the cancel relay subscription")
		}
		dcancel()
	}
	s.closeListeners()
	// Closing the user agent terminates every transaction, which releases
	// handlers waiting on a branch, and closes all connections.
	if err := s.ua.Close(); err != nil {
		s.log.Debug().Err(err).Msg("close user agent")
	}
	s.active.closeAndWait()
	s.handlers.close()
	if s.cancelConn != nil {
		// After the handlers, which may still be offering a CANCEL.
		s.closeCancelRelay(s.cancelConn)
	}
	wg.Wait()
	s.stopHoldDowns()
	// A handler still running during the first close may have opened a
	// client connection after it (a response to a new address); now that
	// nothing runs, close whatever the transports hold again.
	_ = s.ua.Close()
	s.log.Info().Msg("sip proxy stopped")
	return runErr
}

func (s *Server) closeListeners() {
	if s.udpConn != nil {
		_ = s.udpConn.Close()
	}
	if s.tcpLn != nil {
		_ = s.tcpLn.Close()
	}
	if s.tlsLn != nil {
		_ = s.tlsLn.Close()
	}
}

// housekeeping bounds the memory of the rate limiter and the nonce table.
func (s *Server) housekeeping(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.limiter != nil {
				s.limiter.sweep()
			}
			s.auth.nonces.Prune()
			s.tcpFailures.sweep()
		}
	}
}

// activeTracker counts running handlers and lets Run wait for them; once
// closed it admits no new ones.
type activeTracker struct {
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup
	count  atomic.Int64
}

func (a *activeTracker) enter() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		return false
	}
	a.wg.Add(1)
	a.count.Add(1)
	return true
}

func (a *activeTracker) leave() {
	a.count.Add(-1)
	a.wg.Done()
}

func (a *activeTracker) closeAndWait() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.wg.Wait()
}

// goTracked runs f on its own goroutine unless the server is stopping. Used
// only for short transaction work (draining a CANCEL, hanging up a late 2xx).
func (s *Server) goTracked(f func()) {
	if !s.active.enter() {
		return
	}
	go func() {
		defer s.active.leave()
		f()
	}()
}

// newAuthenticator builds the digest verifier from config.
func newAuthenticator(cfg AuthConfig, now func() time.Time) (*authenticator, error) {
	users := make(map[string]User, len(cfg.Users))
	for _, u := range cfg.Users {
		users[u.Username] = u
	}
	var algs []digestauth.Algorithm
	for _, a := range cfg.Algorithms {
		alg, err := digestauth.ParseAlgorithm(a)
		if err != nil {
			return nil, err
		}
		algs = append(algs, alg)
	}
	nonces := digestauth.NewNonces([]byte(cfg.NonceSecret), cfg.NonceTTL, cfg.NonceTableSize, now)
	a := &authenticator{algorithms: algs, nonces: nonces, users: users}
	a.verifier = &digestauth.Verifier{Realm: cfg.Realm, Nonces: nonces, Users: a.ha1, Algorithms: algs}
	return a, nil
}

// udpListenerWait bounds how long Run waits for sipgo to take up the UDP
// socket; it does so at once, unless the machine is starved.
const udpListenerWait = 5 * time.Second

// awaitUDPListener returns once sipgo's transport layer holds the UDP
// socket ServeUDP was given, which it records on its own goroutine. A
// request that came in over TCP or TLS before then and goes on over UDP
// finds no UDP connection of ours: sipgo then binds a new socket to our
// port, which fails, and the call fails on a transport error that would
// also take its gateway out of rotation. So the stream listeners start
// serving only after it.
func (s *Server) awaitUDPListener(ctx context.Context) {
	addr := s.udpConn.LocalAddr().String()
	deadline := time.Now().Add(udpListenerWait)
	for {
		if _, err := s.ua.TransportLayer().GetConnection("udp", addr); err == nil {
			return
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			s.log.Warn().Str("addr", addr).Msg("udp listener not taken up by the sip stack in time")
			return
		}
		time.Sleep(time.Millisecond)
	}
}
