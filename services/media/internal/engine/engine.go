// Package engine anchors the RTP of calls on this node. A session has two
// legs, A (the caller) and B (the callee), each with its own RTP/RTCP port
// pair; packets arriving on one leg are relayed to the other, unchanged but
// for payload type numbers when both legs use the same codec, or decoded and
// re-encoded when they do not. A session can instead terminate leg A in a
// built-in service (echo, tone).
//
// A session's sockets are read by one of a few event loops (one per core,
// package udpio) that run its packet handlers; the session also owns a
// clock goroutine for generated media and reports. It takes its sockets
// out of the loop, ends its clock, closes its sockets and returns its ports
// when it is deleted, times out or the engine closes.
package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/portpool"
	"callgrid.dev/services/media/internal/sdpneg"
	"callgrid.dev/services/media/internal/udpio"
)

// Errors returned by the engine. SDP and port errors wrap the sdpneg and
// portpool sentinels, so errors.Is works against either.
var (
	ErrBadSDP           = sdpneg.ErrBadSDP
	ErrUnsupportedCodec = sdpneg.ErrUnsupportedCodec
	ErrUnknownSession   = errors.New("unknown media session")
	ErrNoPorts          = portpool.ErrExhausted
	// ErrSessionExists is returned by Offer for a session id already in
	// use with a different SDP (a repeated identical offer is answered
	// again, so a retried bus request is harmless).
	ErrSessionExists = errors.New("media session already exists")
	// ErrBadLeg is returned by Update for a leg the session does not have
	// (leg B of a session terminated in a service).
	ErrBadLeg = errors.New("session has no such leg")
	// ErrClosed is returned once Close has been called.
	ErrClosed = errors.New("media engine closed")
)

// Defaults applied by New to zero Config fields.
const (
	DefaultBindIP       = "127.0.0.1"
	DefaultPortMin      = 30000
	DefaultPortMax      = 39999
	DefaultMediaTimeout = 30 * time.Second
)

// DefaultHoldTimeout is the node configuration's hold timeout when it names
// none (in Config, 0 means never): an hour outlasts any hold, and a held
// call whose phones both vanished is not kept for ever.
const DefaultHoldTimeout = time.Hour

// Config configures an Engine. The zero value gives a working local setup
// on loopback.
type Config struct {
	// BindIP is the local address RTP sockets bind to. Default 127.0.0.1.
	BindIP string
	// AdvertiseIP is the address written into SDP. Default BindIP, or
	// 127.0.0.1 when BindIP is unspecified (0.0.0.0 / ::).
	AdvertiseIP string
	// PortMin and PortMax bound the UDP ports used, inclusive; each leg
	// takes an even RTP port and the odd port above it for RTCP.
	// Default 30000-39999.
	PortMin, PortMax int
	// MediaTimeout ends a session when a leg that is sendrecv as
	// negotiated has sent no packet for this long. Default 30 s.
	MediaTimeout time.Duration
	// HoldTimeout ends a session with a leg that is not sendrecv as
	// negotiated (on hold, or one-way) once no leg has sent anything for
	// this long; such a leg is not held to MediaTimeout. 0 means a held
	// session never times out.
	HoldTimeout time.Duration
	// AllowLatching lets a leg whose packets arrive from another address
	// than its SDP says (a NAT) lock onto the source of its first valid RTP
	// packet (a negotiated payload type: noise latches nothing). No other
	// source moves the lock afterwards; the signalled address takes it
	// back. Off: only the signalled address is accepted.
	AllowLatching bool
	// Codecs are the codecs this node offers and transcodes between, in
	// order of preference. Default: every codec the codec package supports.
	Codecs []codec.Name
	// Opus tunes Opus encoders. Default codec.DefaultOpusOptions().
	Opus codec.OpusOptions
	// EventLoops is how many goroutines read the RTP sockets, each serving
	// its share of the sessions. Default GOMAXPROCS: one per core the
	// process may use, more only add wake-ups.
	EventLoops int
}

// withDefaults fills zero fields and validates the result.
func (c Config) withDefaults() (Config, error) {
	if c.BindIP == "" {
		c.BindIP = DefaultBindIP
	}
	bind, err := netip.ParseAddr(c.BindIP)
	if err != nil {
		return c, fmt.Errorf("config BindIP %q: %w", c.BindIP, err)
	}
	if c.AdvertiseIP == "" {
		c.AdvertiseIP = c.BindIP
		if bind.IsUnspecified() {
			c.AdvertiseIP = "127.0.0.1"
		}
	}
	adv, err := netip.ParseAddr(c.AdvertiseIP)
	if err != nil || adv.IsUnspecified() {
		return c, fmt.Errorf("config AdvertiseIP %q is not a usable address", c.AdvertiseIP)
	}
	if c.PortMin == 0 && c.PortMax == 0 {
		c.PortMin, c.PortMax = DefaultPortMin, DefaultPortMax
	}
	if c.MediaTimeout == 0 {
		c.MediaTimeout = DefaultMediaTimeout
	}
	if c.MediaTimeout < 0 || c.HoldTimeout < 0 {
		return c, fmt.Errorf("config MediaTimeout %v / HoldTimeout %v must not be negative", c.MediaTimeout, c.HoldTimeout)
	}
	if len(c.Codecs) == 0 {
		for _, info := range codec.Supported() {
			c.Codecs = append(c.Codecs, info.Name)
		}
	}
	for _, name := range c.Codecs {
		if _, ok := codec.Lookup(string(name)); !ok {
			return c, fmt.Errorf("config Codecs: %q: %w", name, codec.ErrUnsupported)
		}
	}
	if c.Opus == (codec.OpusOptions{}) {
		c.Opus = codec.DefaultOpusOptions()
	}
	if c.EventLoops < 0 {
		return c, fmt.Errorf("config EventLoops %d must not be negative", c.EventLoops)
	}
	if c.EventLoops == 0 {
		c.EventLoops = runtime.GOMAXPROCS(0)
	}
	return c, nil
}

// Option configures optional Engine behaviour.
type Option func(*Engine)

// WithTimeoutHandler sets the function called once for each session that
// ends because of a media timeout, after the session has been released. It
// runs on the engine's timeout goroutine, so it should hand work off rather
// than block.
func WithTimeoutHandler(fn func(sessionID string, q Quality)) Option {
	return func(e *Engine) { e.onTimeout = fn }
}

// WithTranscodingHandler sets the function told each time a session starts
// or stops transcoding: in Answer, Update or Rollback before they return,
// and on an event loop when an endpoint switches to another codec of its
// answer. It is told of every change, one at a time and in order, with
// the session held, so the last it was told of a session is what the
// session does; it must return quickly and not call into the engine.
func WithTranscodingHandler(fn func(sessionID string, transcoding bool)) Option {
	return func(e *Engine) { e.onTranscoding = fn }
}

// Engine holds the media sessions of this node. It is safe for concurrent use.
type Engine struct {
	cfg       Config
	log       zerolog.Logger
	pool      *portpool.Pool
	loops     *udpio.Group
	metrics   *metrics
	onTimeout func(string, Quality)
	// onTranscoding is told of every change in a session's transcoding.
	onTranscoding func(string, bool)
	advertise     netip.Addr
	bind          netip.Addr
	caps          []sdpneg.Capability
	rtcpEvery     time.Duration
	// talkspurtGrace is how much later than a packet time a transcoded
	// source's next packet may be before the audio queued of it is sent as
	// the tail of a talkspurt: defaultTalkspurtGrace; tests that send
	// bursts, which a stall of theirs would cut, lengthen it.
	talkspurtGrace time.Duration

	mu       sync.Mutex
	sessions map[string]*session
	// expiring are sessions the sweeper took out of sessions and is
	// ending for a media timeout, so that a Delete racing it gets their
	// quality rather than "unknown".
	expiring map[string]*expiry
	closed   bool

	stopSweep chan struct{}
	sweepDone chan struct{}
}

// New builds an engine and starts its media-timeout sweeper. reg may be nil
// (metrics are then kept in a private registry).
func New(cfg Config, log zerolog.Logger, reg prometheus.Registerer, opts ...Option) (*Engine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	pool, err := portpool.New(cfg.BindIP, cfg.PortMin, cfg.PortMax)
	if err != nil {
		return nil, fmt.Errorf("config PortMin/PortMax: %w", err)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg, pool, cfg.EventLoops)
	if err != nil {
		return nil, err
	}
	loops, err := udpio.NewGroup(cfg.EventLoops, func(error) { m.readErrors.Inc() })
	if err != nil {
		return nil, fmt.Errorf("media event loops: %w", err)
	}
	e := &Engine{
		cfg:            cfg,
		log:            log,
		pool:           pool,
		loops:          loops,
		metrics:        m,
		advertise:      netip.MustParseAddr(cfg.AdvertiseIP).Unmap(),
		bind:           netip.MustParseAddr(cfg.BindIP).Unmap(),
		rtcpEvery:      rtcpInterval,
		talkspurtGrace: defaultTalkspurtGrace,
		sessions:       map[string]*session{},
		expiring:       map[string]*expiry{},
		stopSweep:      make(chan struct{}),
		sweepDone:      make(chan struct{}),
	}
	for _, name := range cfg.Codecs {
		info, _ := codec.Lookup(string(name))
		e.caps = append(e.caps, sdpneg.Capability{Name: string(info.Name), ClockRate: info.ClockRate})
		// Series exist from the start, so dashboards and alerts see zeros
		// rather than nothing on an idle node.
		m.forCodec(string(info.Name), 0)
	}
	for _, svc := range []Service{ServiceNone, ServiceEcho, ServiceTone} {
		m.sessionsStarted.WithLabelValues(svc.String())
	}
	for _, opt := range opts {
		opt(e)
	}
	go e.sweep()
	return e, nil
}

// Config returns the effective configuration, defaults applied.
func (e *Engine) Config() Config { return e.cfg }

// Active returns the number of live sessions.
func (e *Engine) Active() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sessions)
}

// Close ends every session, returns every port and stops the sweeper. The
// engine refuses new work afterwards.
func (e *Engine) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	sessions := make([]*session, 0, len(e.sessions))
	for id, s := range e.sessions {
		sessions = append(sessions, s)
		delete(e.sessions, id)
	}
	e.mu.Unlock()

	close(e.stopSweep)
	<-e.sweepDone
	for _, s := range sessions {
		e.finish(s, "engine closed")
	}
	e.loops.Close()
}

// now returns the time since the process's epoch, the unit of leg activity
// stamps: a monotonic integer that fits an atomic.
func (e *Engine) now() time.Duration { return stampOf(time.Now()) }

// epoch is the monotonic origin of leg activity stamps. One for the
// process, so that the packet path reads it from a line every packet keeps
// in the cache rather than from its engine or session.
var epoch = time.Now()

// stampOf is t as a leg activity stamp.
func stampOf(t time.Time) time.Duration { return t.Sub(epoch) }

// lookup returns a live session.
func (e *Engine) lookup(id string) (*session, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	s, ok := e.sessions[id]
	if !ok {
		return nil, fmt.Errorf("session %s: %w", id, ErrUnknownSession)
	}
	return s, nil
}

// remove takes a session out of the table; it reports false when someone
// else (Delete, the sweeper, Close) already did.
func (e *Engine) remove(s *session) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sessions[s.id] != s {
		return false
	}
	delete(e.sessions, s.id)
	return true
}
