// Package bus is the one typed NATS client both services use: connection
// with reconnect and backoff, an embedded server for zero-config setups and
// tests, request/reply with deadlines and explicit statuses, JetStream
// key-value buckets and the events stream.
package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// joinProbeTimeout bounds the check for a local server to join.
const joinProbeTimeout = 250 * time.Millisecond

// Client is a connection to the bus. It is safe for concurrent use.
type Client struct {
	cfg      Config
	log      zerolog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream
	metrics  *metrics
	embedded *EmbeddedServer // owned when this client started it

	reconnectMu sync.Mutex
	reconnected chan struct{}

	closeOnce sync.Once
	closing   atomic.Bool // set by Close: later disconnects are our own
}

// Connect reaches the bus described by cfg. With cfg.URL empty it starts
// the embedded server, or joins one that another local service already
// started on the same address, so a zero-config stack of several processes
// shares one bus. name identifies the connection in the server's monitoring.
func Connect(ctx context.Context, cfg Config, name string, log zerolog.Logger, reg prometheus.Registerer) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: log.With().Str("component", "bus").Logger(), metrics: newMetrics(reg), reconnected: make(chan struct{})}
	url := cfg.URL
	if url == "" {
		var err error
		url, err = c.startOrJoinEmbedded(cfg.Embedded)
		if err != nil {
			return nil, err
		}
	}
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.ReconnectJitter(DefaultReconnectJitter, DefaultReconnectJitter),
		// Without a reconnect buffer a publish or request made while the bus
		// is away fails at once instead of waiting out its timeout: callers
		// answer 503 fast rather than hang.
		nats.ReconnectBufSize(-1),
		nats.RetryOnFailedConnect(false),
		// NATS bounds a drain by its own timeout, 30 s unless told: a
		// longer one configured here would be cut short by it.
		nats.DrainTimeout(cfg.DrainTimeout),
		nats.PingInterval(cfg.PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			c.metrics.connected.Set(0)
			if c.closing.Load() {
				// NATS reports our own Close as a disconnect too; counting
				// it would chart every deploy as a loss of the bus.
				return
			}
			c.metrics.disconnects.Inc()
			c.log.Warn().Err(err).Msg("bus disconnected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.metrics.reconnects.Inc()
			c.metrics.connected.Set(1)
			c.log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("bus reconnected")
			c.signalReconnect()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := c.log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("bus async error")
		}),
	)
	if err != nil {
		c.shutdownEmbedded()
		return nil, fmt.Errorf("connect to bus %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		c.shutdownEmbedded()
		return nil, fmt.Errorf("open jetstream: %w", err)
	}
	c.nc, c.js = nc, js
	c.metrics.connected.Set(1)
	c.log.Info().Str("url", nc.ConnectedUrlRedacted()).Bool("embedded", c.embedded != nil).Msg("bus connected")
	return c, nil
}

// startOrJoinEmbedded joins a NATS server already listening on the
// embedded address (another local service started it), or starts one.
func (c *Client) startOrJoinEmbedded(cfg EmbeddedConfig) (string, error) {
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = DefaultEmbeddedPort
	}
	if port > 0 {
		url := "nats://" + net.JoinHostPort(host, strconv.Itoa(port))
		if probe, err := nats.Connect(url, nats.Timeout(joinProbeTimeout)); err == nil {
			probe.Close()
			c.log.Info().Str("url", url).Msg("joining the embedded bus another local service started")
			return url, nil
		}
	}
	srv, err := StartEmbedded(cfg)
	if err != nil {
		return "", fmt.Errorf("start embedded bus: %w", err)
	}
	c.embedded = srv
	return srv.URL(), nil
}

// Conn is the underlying NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// JetStream is the client's JetStream context.
func (c *Client) JetStream() jetstream.JetStream { return c.js }

// Replicas is the configured JetStream replica count for what this service
// creates.
func (c *Client) Replicas() int { return c.cfg.Replicas }

// Embedded is the server this client started, or nil.
func (c *Client) Embedded() *EmbeddedServer { return c.embedded }

// Connected reports whether the bus is reachable right now.
func (c *Client) Connected() bool { return c.nc.IsConnected() }

// Reconnected returns a channel closed at the next reconnect. Watchers of
// key-value buckets use it to reopen their watch: a restarted server may
// have lost in-memory buckets that are being recreated.
func (c *Client) Reconnected() <-chan struct{} {
	c.reconnectMu.Lock()
	defer c.reconnectMu.Unlock()
	return c.reconnected
}

func (c *Client) signalReconnect() {
	c.reconnectMu.Lock()
	defer c.reconnectMu.Unlock()
	close(c.reconnected)
	c.reconnected = make(chan struct{})
}

// Close drains subscriptions and pending publishes (bounded by the drain
// timeout), closes the connection and stops an owned embedded server.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		if c.nc.IsConnected() {
			done := make(chan struct{})
			c.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
			if err := c.nc.Drain(); err == nil {
				select {
				case <-done:
				case <-time.After(c.cfg.DrainTimeout):
					c.log.Warn().Dur("timeout", c.cfg.DrainTimeout).Msg("bus drain timed out")
				}
			}
		}
		c.nc.Close()
		c.metrics.connected.Set(0)
		c.shutdownEmbedded()
	})
}

func (c *Client) shutdownEmbedded() {
	if c.embedded != nil {
		c.embedded.Shutdown()
	}
}

// Errors a request can end with, for callers to classify with errors.Is.
var (
	// ErrUnavailable: the bus is not connected; nothing was sent.
	ErrUnavailable = errors.New("bus unavailable")
	// ErrTimeout: no reply before the deadline.
	ErrTimeout = errors.New("bus request timed out")
	// ErrNoResponders: nobody serves the subject (a dead or unknown node).
	ErrNoResponders = errors.New("no responders on subject")
	// ErrBadReply: a reply arrived but could not be decoded.
	ErrBadReply = errors.New("undecodable reply")
)
