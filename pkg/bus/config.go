package bus

import (
	"errors"
	"fmt"
	"time"
)

// Defaults for Config fields left zero.
const (
	DefaultRequestTimeout = 500 * time.Millisecond
	DefaultReconnectWait  = 250 * time.Millisecond
	// DefaultReconnectJitter spreads reconnects of many replicas after a
	// bus restart so they do not arrive in one burst.
	DefaultReconnectJitter = 250 * time.Millisecond
	DefaultDrainTimeout    = 5 * time.Second
	DefaultConnectTimeout  = 2 * time.Second
	// DefaultPingInterval is how often the client checks that the server
	// still answers. A server host that vanishes (power, partition) leaves
	// the TCP connection open with nobody behind it; the client notices
	// only by unanswered pings, after MaxPingsOut+1 intervals. NATS's own
	// two minutes would mean minutes of requests timing out one by one
	// instead of a fast ErrUnavailable and a reconnect to a live server.
	DefaultPingInterval = 2 * time.Second
	// MaxPingsOut is how many pings may go unanswered before the
	// connection counts as dead.
	MaxPingsOut = 2
)

// Config says how to reach the bus. With URL empty the service starts an
// embedded server (see EmbeddedConfig) and connects to it.
type Config struct {
	// URL of the NATS server(s), comma separated; empty means embedded.
	URL string `yaml:"url"`
	// Embedded configures the in-process server used when URL is empty.
	Embedded EmbeddedConfig `yaml:"embedded"`
	// RequestTimeout bounds one request/reply when the caller's context
	// has no earlier deadline.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// ReconnectWait is the pause between reconnect attempts (plus jitter).
	ReconnectWait time.Duration `yaml:"reconnect_wait"`
	// ConnectTimeout bounds the first connection.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// DrainTimeout bounds the drain on Close, any length: the connection
	// is given it in place of NATS's own 30 s. Default 5 s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// PingInterval is how often the server's liveness is checked; a dead
	// connection is given up after MaxPingsOut+1 of them. Default 2 s.
	PingInterval time.Duration `yaml:"ping_interval"`
	// Replicas is the JetStream replica count of the buckets and streams
	// this service creates: 1 on a single server, 3 on a cluster so they
	// survive losing a server. Default 1.
	Replicas int `yaml:"replicas"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = DefaultReconnectWait
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

// Validate reports the first field that cannot work, by name.
func (c Config) Validate() error {
	var errs []error
	if c.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("bus.request_timeout: must not be negative, got %s", c.RequestTimeout))
	}
	if c.ReconnectWait < 0 {
		errs = append(errs, fmt.Errorf("bus.reconnect_wait: must not be negative, got %s", c.ReconnectWait))
	}
	if c.ConnectTimeout < 0 {
		errs = append(errs, fmt.Errorf("bus.connect_timeout: must not be negative, got %s", c.ConnectTimeout))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("bus.drain_timeout: must not be negative, got %s", c.DrainTimeout))
	}
	if c.PingInterval < 0 {
		errs = append(errs, fmt.Errorf("bus.ping_interval: must not be negative, got %s", c.PingInterval))
	} else if d := c.WithDefaults(); d.RequestTimeout > 0 && MaxPingsOut*d.PingInterval < d.RequestTimeout {
		// NATS drops a connection whose pong is MaxPingsOut intervals
		// late. Shorter than a request may wait for its reply, a server
		// merely slow (or a bare number in YAML, read as nanoseconds)
		// would have every connection dropped and every request failed.
		errs = append(errs, fmt.Errorf("bus.ping_interval: %s gives the server %s to answer a ping, less than bus.request_timeout %s", d.PingInterval, MaxPingsOut*d.PingInterval, d.RequestTimeout))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("bus.replicas: %d is not within 1-5", c.Replicas))
	}
	if c.URL == "" && c.Replicas > 1 {
		// The embedded bus, started here or joined, is one server: every
		// stream and bucket asked for more replicas would be refused.
		errs = append(errs, fmt.Errorf("bus.replicas: %d needs a cluster (bus.url); the embedded server holds 1", c.Replicas))
	}
	if c.URL == "" && (c.Embedded.Port < -1 || c.Embedded.Port > 65535) {
		errs = append(errs, fmt.Errorf("bus.embedded.port: %d is not a port (-1 picks a free one)", c.Embedded.Port))
	}
	return errors.Join(errs...)
}
