// Package app wires a proxy replica together: configuration, bus, location
// store, fleet view, SIP server and the metrics/health server.
package app

import (
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/config"
	"callgrid.dev/pkg/fleet"
	"callgrid.dev/pkg/obs"
	"callgrid.dev/services/proxy/internal/location"
	"callgrid.dev/services/proxy/internal/sipproxy"
)

// Defaults of the proxy's own settings.
const (
	// DefaultHTTPAddr serves /metrics, /healthz, /livez and /readyz.
	DefaultHTTPAddr = "127.0.0.1:9101"
	// EnvPrefix names the environment overrides: PROXY_SIP_LISTEN_ADDR etc.
	EnvPrefix = "PROXY"
)

// Config is the whole configuration of a proxy replica. The zero value
// (after Defaults) runs a proxy on 127.0.0.1:5060 with an embedded bus.
type Config struct {
	Log      obs.LogConfig     `yaml:"log"`
	HTTP     HTTPConfig        `yaml:"http"`
	Bus      bus.Config        `yaml:"bus"`
	SIP      sipproxy.Config   `yaml:"sip"`
	Location location.KVConfig `yaml:"location"`
	Media    MediaConfig       `yaml:"media"`
	Runtime  RuntimeConfig     `yaml:"runtime"`
}

// HTTPConfig is the metrics and health endpoint.
type HTTPConfig struct {
	// Addr to listen on, host:port. Default 127.0.0.1:9101.
	Addr string `yaml:"addr"`
}

// MediaConfig is how the proxy uses the media fleet.
type MediaConfig struct {
	// Mode is "anchor" (default: every call's RTP goes through a media
	// node) or "bypass" (SDP is relayed untouched); a dialplan rule's
	// media key overrides it for the calls it routes.
	Mode string `yaml:"mode"`
	// RetryAfter is sent with the 503 answering a call no node could take
	// or made while the bus is away (default 5s).
	RetryAfter time.Duration `yaml:"retry_after"`
	// RequestTimeout bounds one request to a node, a whole claim included
	// (default 1s).
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// OrphanGrace is how long a node must stay out of the fleet, with the
	// bus up, before the proxy hangs up its calls (default 2s).
	OrphanGrace time.Duration `yaml:"orphan_grace"`
	// Claim tunes how sessions are claimed from the fleet.
	Claim fleet.ClaimConfig `yaml:"claim"`
	// HeartbeatInterval must match the media nodes' node.heartbeat_interval
	// (default 1s): a node silent for three of them is gone.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
}

// Defaults returns the configuration a proxy runs with when nothing is set.
func Defaults() Config {
	return Config{
		HTTP:    HTTPConfig{Addr: DefaultHTTPAddr},
		Runtime: RuntimeConfig{GCPercent: DefaultGCPercent},
		Media: MediaConfig{
			Mode:           sipproxy.MediaModeAnchor,
			RetryAfter:     sipproxy.DefaultMediaRetryAfter,
			RequestTimeout: sipproxy.DefaultMediaRequestTimeout,
			OrphanGrace:    sipproxy.DefaultOrphanGrace,
		},
	}
}

// Load reads the file at path (optional) over the defaults, then the
// environment (PROXY_..., and NATS_URL for bus.url unless PROXY_BUS_URL is
// not empty), and validates. An empty NATS_URL counts as unset: it would
// otherwise replace the file's bus by an embedded one no other replica
// sees.
func Load(path string) (Config, error) {
	cfg := Defaults()
	if err := config.Load(path, EnvPrefix, &cfg); err != nil {
		return cfg, err
	}
	if url, ok := config.LookupEnv("NATS_URL"); ok && os.Getenv(EnvPrefix+"_BUS_URL") == "" {
		cfg.Bus.URL = url
	}
	return cfg, cfg.Validate()
}

// Validate names every field that cannot work.
func (c Config) Validate() error {
	var errs []error
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := obs.CheckListenAddr(c.HTTP.Addr); err != nil {
		errs = append(errs, fmt.Errorf("http.addr: %w", err))
	}
	if err := c.Bus.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.SIP.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("sip: %w", err))
	}
	if err := c.checkLocationMaxAge(); err != nil {
		errs = append(errs, err)
	}
	if c.Media.Mode != sipproxy.MediaModeAnchor && c.Media.Mode != sipproxy.MediaModeBypass {
		errs = append(errs, fmt.Errorf("media.mode: %q is not anchor or bypass", c.Media.Mode))
	}
	if c.Media.RetryAfter < 0 || c.Media.RequestTimeout < 0 || c.Media.OrphanGrace < 0 {
		errs = append(errs, errors.New("media: retry_after, request_timeout and orphan_grace must not be negative"))
	}
	if c.Runtime.GCPercent < 0 && c.Runtime.GCPercent != -1 {
		errs = append(errs, fmt.Errorf("runtime.gc_percent: %d is neither -1 (off) nor a percentage", c.Runtime.GCPercent))
	}
	if c.Runtime.MemoryLimitMB < 0 {
		errs = append(errs, errors.New("runtime.memory_limit_mb must not be negative"))
	}
	// applyRuntime shifts the MiB into bytes: past this the product
	// overflows into a negative or tiny limit that starves the heap.
	if c.Runtime.MemoryLimitMB > math.MaxInt64>>20 {
		errs = append(errs, fmt.Errorf("runtime.memory_limit_mb: %d MiB does not fit in a byte count", c.Runtime.MemoryLimitMB))
	}
	if c.Media.Claim.AttemptTimeout < 0 || c.Media.Claim.MaxAttempts < 0 || c.Media.Claim.Units < 0 {
		errs = append(errs, errors.New("media.claim: attempt_timeout, max_attempts and units must not be negative"))
	}
	// A request waits no longer than the bus's request timeout: a longer
	// attempt would be cut short without a word, and the node it gave up
	// on would keep the units of an offer that came back too late.
	if attempt, request := c.Media.Claim.AttemptTimeout, c.Bus.WithDefaults().RequestTimeout; attempt > request {
		errs = append(errs, fmt.Errorf("media.claim.attempt_timeout: %v exceeds bus.request_timeout %v, which bounds each attempt", attempt, request))
	}
	return errors.Join(errs...)
}

// checkLocationMaxAge: the bucket drops a location record max_age after its
// last write, and a REGISTER may bind a contact for up to the registrar's
// max_expires from then; were max_age not above it, a phone registered
// for that long would vanish from the bucket, unreachable, before its
// binding expired, with nothing logged.
func (c Config) checkLocationMaxAge() error {
	maxAge := c.Location.WithDefaults().MaxAge
	maxExpires := time.Duration(c.SIP.WithDefaults().Registrar.MaxExpires) * time.Second
	if maxAge <= maxExpires {
		return fmt.Errorf("location.max_age: %v must exceed sip.registrar.max_expires (%v), or bindings vanish from the bucket before they expire", maxAge, maxExpires)
	}
	return nil
}
