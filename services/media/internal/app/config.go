// Package app wires a media node together: configuration, bus, media
// engine, control layer and the metrics/health server.
package app

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/config"
	"callgrid.dev/pkg/obs"
	"callgrid.dev/services/media/internal/codec"
	"callgrid.dev/services/media/internal/engine"
	"callgrid.dev/services/media/internal/node"
	"callgrid.dev/services/media/internal/portpool"
)

// Defaults of the media node's own settings.
const (
	// DefaultHTTPAddr serves /metrics, /healthz, /livez and /readyz.
	DefaultHTTPAddr = "127.0.0.1:9102"
	// EnvPrefix names the environment overrides: MEDIA_RTP_PORT_MIN etc.
	EnvPrefix = "MEDIA"
)

// Config is the whole configuration of a media node. The zero value (after
// Defaults) runs a node on loopback that joins the local embedded bus.
type Config struct {
	Log  obs.LogConfig `yaml:"log"`
	HTTP HTTPConfig    `yaml:"http"`
	Bus  bus.Config    `yaml:"bus"`
	Node node.Config   `yaml:"node"`
	RTP  RTPConfig     `yaml:"rtp"`
	Opus OpusConfig    `yaml:"opus"`
}

// HTTPConfig is the metrics and health endpoint.
type HTTPConfig struct {
	// Addr to listen on, host:port. Default 127.0.0.1:9102.
	Addr string `yaml:"addr"`
}

// RTPConfig is where and how the node carries media.
type RTPConfig struct {
	// BindIP the RTP sockets bind to. Default 127.0.0.1.
	BindIP string `yaml:"bind_ip"`
	// AdvertiseIP written into SDP and the fleet status; set it when the
	// node sits behind NAT or in a pod. Default: BindIP.
	AdvertiseIP string `yaml:"advertise_ip"`
	// PortMin and PortMax bound the RTP port range (even RTP, RTCP +1).
	PortMin int `yaml:"port_min"`
	PortMax int `yaml:"port_max"`
	// MediaTimeout ends a call whose sendrecv legs send nothing this long
	// (default 30 s). 0 is the default too, not never: a call whose phones
	// vanished would hold its ports for ever.
	MediaTimeout time.Duration `yaml:"media_timeout"`
	// HoldTimeout replaces it while a leg is on hold or one-way: the call
	// ends once no leg has sent anything for this long (default 1 h);
	// 0 never.
	HoldTimeout time.Duration `yaml:"hold_timeout"`
	// AllowLatching lets a NATed leg lock onto the source of its first
	// valid RTP packet.
	AllowLatching bool `yaml:"allow_latching"`
	// Codecs offered and transcoded, in preference order (SDP names).
	Codecs []string `yaml:"codecs"`
}

// OpusConfig tunes the Opus encoder used when transcoding. Towards each
// phone they are the most the node does: the phone's a=fmtp caps them
// (RFC 7587: maxaveragebitrate, maxplaybackrate, cbr), and FEC and DTX are
// used only for a phone whose fmtp asks for them (useinbandfec=1,
// usedtx=1).
type OpusConfig struct {
	Complexity        int  `yaml:"complexity"`
	BitrateBPS        int  `yaml:"bitrate_bps"`
	FEC               bool `yaml:"fec"`
	PacketLossPercent int  `yaml:"packet_loss_percent"`
	DTX               bool `yaml:"dtx"`
}

// Defaults returns the configuration a node runs with when nothing is set.
func Defaults() Config {
	opus := codec.DefaultOpusOptions()
	return Config{
		HTTP: HTTPConfig{Addr: DefaultHTTPAddr},
		Node: node.Config{ID: defaultNodeID()},
		RTP: RTPConfig{
			BindIP:       engine.DefaultBindIP,
			PortMin:      engine.DefaultPortMin,
			PortMax:      engine.DefaultPortMax,
			MediaTimeout: engine.DefaultMediaTimeout,
			HoldTimeout:  engine.DefaultHoldTimeout,
		},
		Opus: OpusConfig{Complexity: opus.Complexity, BitrateBPS: opus.BitrateBPS, FEC: opus.FEC, PacketLossPercent: opus.PacketLossPercent, DTX: opus.DTX},
	}
}

var notToken = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// defaultNodeID is the host name made a valid subject token, so each pod
// or host gets its own id with no configuration.
func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "local"
	}
	id := "media-" + strings.Trim(notToken.ReplaceAllString(host, "-"), "-")
	if len(id) > 64 {
		id = id[:64]
	}
	return id
}

// Load reads the file at path (optional) over the defaults, then the
// environment (MEDIA_..., and NATS_URL for bus.url), and validates.
func Load(path string) (Config, error) {
	cfg := Defaults()
	if err := config.Load(path, EnvPrefix, &cfg); err != nil {
		return cfg, err
	}
	if url, ok := config.LookupEnv("NATS_URL"); ok && os.Getenv(EnvPrefix+"_BUS_URL") == "" {
		cfg.Bus.URL = url
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// Validate names every field that cannot work.
func (c *Config) Validate() error {
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
	if c.Node.AdvertiseAddress == "" {
		c.Node.AdvertiseAddress = c.advertiseIP()
	} else if a, err := netip.ParseAddr(c.Node.AdvertiseAddress); err != nil || a.IsUnspecified() {
		errs = append(errs, fmt.Errorf("node.advertise_address: %q is not an address peers can send to", c.Node.AdvertiseAddress))
	}
	if err := c.Node.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := netip.ParseAddr(c.RTP.BindIP); err != nil {
		errs = append(errs, fmt.Errorf("rtp.bind_ip: %w", err))
	}
	if c.RTP.AdvertiseIP != "" {
		if a, err := netip.ParseAddr(c.RTP.AdvertiseIP); err != nil || a.IsUnspecified() {
			errs = append(errs, fmt.Errorf("rtp.advertise_ip: %q is not an address peers can send to", c.RTP.AdvertiseIP))
		}
	}
	// Counted in even/odd pairs, as the pool hands them out: four ports
	// from an odd one hold a single pair, and a bridged call takes one
	// for each of its two legs.
	if c.RTP.PortMin < 1024 || portpool.Pairs(c.RTP.PortMin, c.RTP.PortMax) < 2 {
		errs = append(errs, fmt.Errorf("rtp.port_min/port_max: %d-%d must hold at least 2 port pairs (even RTP, RTCP +1) within 1024-65535", c.RTP.PortMin, c.RTP.PortMax))
	}
	if c.RTP.MediaTimeout < 0 || c.RTP.HoldTimeout < 0 {
		errs = append(errs, errors.New("rtp.media_timeout/hold_timeout: must not be negative"))
	}
	for _, name := range c.RTP.Codecs {
		if _, ok := codec.Lookup(name); !ok {
			errs = append(errs, fmt.Errorf("rtp.codecs: %q is not a supported codec", name))
		}
	}
	opusErrs := len(errs)
	if c.Opus.Complexity < 0 || c.Opus.Complexity > 10 {
		errs = append(errs, fmt.Errorf("opus.complexity: %d is not within 0-10", c.Opus.Complexity))
	}
	// 0 is no default here: Defaults has set one, and the encoder, made
	// only once a call needs transcoding, refuses 0 like any rate outside
	// the range.
	if c.Opus.BitrateBPS < 6000 || c.Opus.BitrateBPS > 300000 {
		errs = append(errs, fmt.Errorf("opus.bitrate_bps: %d is not within 6000-300000 (a mono encoder runs no faster)", c.Opus.BitrateBPS))
	}
	if c.Opus.PacketLossPercent < 0 || c.Opus.PacketLossPercent > 100 {
		errs = append(errs, fmt.Errorf("opus.packet_loss_percent: %d is not within 0-100", c.Opus.PacketLossPercent))
	}
	if len(errs) == opusErrs {
		// The encoder has the last word on what it takes: without this a
		// setting it refuses would pass here and fail every transcoded
		// call instead.
		if enc, err := codec.NewEncoder(codec.Opus, 48000, c.opusOptions()); err != nil {
			errs = append(errs, fmt.Errorf("opus: %w", err))
		} else {
			enc.Close()
		}
	}
	return errors.Join(errs...)
}

func (c *Config) advertiseIP() string {
	if c.RTP.AdvertiseIP != "" {
		return c.RTP.AdvertiseIP
	}
	if a, err := netip.ParseAddr(c.RTP.BindIP); err == nil && a.IsUnspecified() {
		return "127.0.0.1"
	}
	return c.RTP.BindIP
}

// engineConfig translates the file's settings into the engine's.
func (c *Config) engineConfig() engine.Config {
	codecs := make([]codec.Name, 0, len(c.RTP.Codecs))
	for _, name := range c.RTP.Codecs {
		info, _ := codec.Lookup(name)
		codecs = append(codecs, info.Name)
	}
	return engine.Config{
		BindIP:        c.RTP.BindIP,
		AdvertiseIP:   c.advertiseIP(),
		PortMin:       c.RTP.PortMin,
		PortMax:       c.RTP.PortMax,
		MediaTimeout:  c.RTP.MediaTimeout,
		HoldTimeout:   c.RTP.HoldTimeout,
		AllowLatching: c.RTP.AllowLatching,
		Codecs:        codecs,
		Opus:          c.opusOptions(),
	}
}

func (c *Config) opusOptions() codec.OpusOptions {
	return codec.OpusOptions{
		Complexity: c.Opus.Complexity, BitrateBPS: c.Opus.BitrateBPS, FEC: c.Opus.FEC,
		PacketLossPercent: c.Opus.PacketLossPercent, DTX: c.Opus.DTX,
	}
}
