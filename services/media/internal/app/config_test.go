package app

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/services/media/internal/codec"
)

// Every MEDIA_ variable of the media node's own settings reaches its field.
func TestEnvironmentOverridesApply(t *testing.T) {
	env := map[string]string{
		"MEDIA_HTTP_ADDR":                "127.0.0.1:9200",
		"MEDIA_NODE_ID":                  "media-env",
		"MEDIA_NODE_ADVERTISE_ADDRESS":   "192.0.2.7",
		"MEDIA_RTP_BIND_IP":              "0.0.0.0",
		"MEDIA_RTP_ADVERTISE_IP":         "192.0.2.8",
		"MEDIA_RTP_PORT_MIN":             "40000",
		"MEDIA_RTP_PORT_MAX":             "40999",
		"MEDIA_RTP_MEDIA_TIMEOUT":        "45s",
		"MEDIA_RTP_HOLD_TIMEOUT":         "2h",
		"MEDIA_RTP_ALLOW_LATCHING":       "true",
		"MEDIA_RTP_CODECS":               "PCMU, opus",
		"MEDIA_OPUS_COMPLEXITY":          "3",
		"MEDIA_OPUS_BITRATE_BPS":         "32000",
		"MEDIA_OPUS_FEC":                 "false",
		"MEDIA_OPUS_PACKET_LOSS_PERCENT": "20",
		"MEDIA_OPUS_DTX":                 "true",
		"MEDIA_BUS_URL":                  "nats://127.0.0.1:4999",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.HTTP.Addr = "127.0.0.1:9200"
	want.Node.ID = "media-env"
	want.Node.AdvertiseAddress = "192.0.2.7"
	want.RTP = RTPConfig{
		BindIP: "0.0.0.0", AdvertiseIP: "192.0.2.8", PortMin: 40000, PortMax: 40999,
		MediaTimeout: 45 * time.Second, HoldTimeout: 2 * time.Hour, AllowLatching: true,
		Codecs: []string{"PCMU", "opus"},
	}
	want.Opus = OpusConfig{Complexity: 3, BitrateBPS: 32000, FEC: false, PacketLossPercent: 20, DTX: true}
	want.Bus.URL = "nats://127.0.0.1:4999"
	if cfg.HTTP != want.HTTP || cfg.Node.ID != want.Node.ID || cfg.Node.AdvertiseAddress != want.Node.AdvertiseAddress ||
		cfg.Opus != want.Opus || cfg.Bus.URL != want.Bus.URL || !sameRTP(cfg.RTP, want.RTP) {
		t.Fatalf("loaded\n%+v\nwant\n%+v", cfg, want)
	}
	ec := cfg.engineConfig()
	if ec.AdvertiseIP != "192.0.2.8" || ec.PortMin != 40000 || ec.PortMax != 40999 || !ec.AllowLatching ||
		ec.Opus != (codec.OpusOptions{Complexity: 3, BitrateBPS: 32000, PacketLossPercent: 20, DTX: true}) ||
		len(ec.Codecs) != 2 || ec.Codecs[0] != codec.PCMU || ec.Codecs[1] != codec.Opus {
		t.Fatalf("engine config %+v", ec)
	}
}

func sameRTP(a, b RTPConfig) bool {
	return slices.Equal(a.Codecs, b.Codecs) &&
		a.BindIP == b.BindIP && a.AdvertiseIP == b.AdvertiseIP && a.PortMin == b.PortMin && a.PortMax == b.PortMax &&
		a.MediaTimeout == b.MediaTimeout && a.HoldTimeout == b.HoldTimeout && a.AllowLatching == b.AllowLatching
}

// Settings that cannot work are refused at start with the field named,
// rather than found out by the first call that needs them.
func TestLoadRefusesSettingsThatCannotWork(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"negative media timeout", map[string]string{"MEDIA_RTP_MEDIA_TIMEOUT": "-1s"}, "rtp.media_timeout"},
		{"negative hold timeout", map[string]string{"MEDIA_RTP_HOLD_TIMEOUT": "-1m"}, "hold_timeout"},
		{"inverted port range", map[string]string{"MEDIA_RTP_PORT_MIN": "40000", "MEDIA_RTP_PORT_MAX": "30000"}, "rtp.port_min"},
		{"port range beyond 65535", map[string]string{"MEDIA_RTP_PORT_MIN": "65000", "MEDIA_RTP_PORT_MAX": "65536"}, "rtp.port_min"},
		{"privileged ports", map[string]string{"MEDIA_RTP_PORT_MIN": "1000", "MEDIA_RTP_PORT_MAX": "2000"}, "rtp.port_min"},
		// Four ports, but from an odd one: a single even/odd pair, where a
		// bridged call needs one for each leg.
		{"one pair from an odd minimum", map[string]string{"MEDIA_RTP_PORT_MIN": "30001", "MEDIA_RTP_PORT_MAX": "30004"}, "rtp.port_min"},
		{"one pair", map[string]string{"MEDIA_RTP_PORT_MIN": "30000", "MEDIA_RTP_PORT_MAX": "30002"}, "rtp.port_min"},
		{"bitrate too low", map[string]string{"MEDIA_OPUS_BITRATE_BPS": "5999"}, "opus.bitrate_bps"},
		{"bitrate too high", map[string]string{"MEDIA_OPUS_BITRATE_BPS": "510001"}, "opus.bitrate_bps"},
		// The encoder refuses 0 like any other rate outside 6000-300000.
		{"zero bitrate", map[string]string{"MEDIA_OPUS_BITRATE_BPS": "0"}, "opus.bitrate_bps"},
		{"complexity below 0", map[string]string{"MEDIA_OPUS_COMPLEXITY": "-1"}, "opus.complexity"},
		{"complexity above 10", map[string]string{"MEDIA_OPUS_COMPLEXITY": "11"}, "opus.complexity"},
		{"packet loss above 100", map[string]string{"MEDIA_OPUS_PACKET_LOSS_PERCENT": "101"}, "opus.packet_loss_percent"},
		{"advertise ip not an ip", map[string]string{"MEDIA_RTP_ADVERTISE_IP": "media.example"}, "rtp.advertise_ip"},
		{"advertise ip unspecified", map[string]string{"MEDIA_RTP_ADVERTISE_IP": "0.0.0.0"}, "rtp.advertise_ip"},
		{"node advertise address not an ip", map[string]string{"MEDIA_NODE_ADVERTISE_ADDRESS": "media.example"}, "node.advertise_address"},
		{"bind ip not an ip", map[string]string{"MEDIA_RTP_BIND_IP": "eth0"}, "rtp.bind_ip"},
		{"unknown codec", map[string]string{"MEDIA_RTP_CODECS": "PCMU,speex"}, "rtp.codecs"},
		{"http addr", map[string]string{"MEDIA_HTTP_ADDR": "9102"}, "http.addr"},
		{"unparsable number", map[string]string{"MEDIA_RTP_PORT_MIN": "low"}, "rtp.port_min"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := Load("")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// Whatever Validate accepts, the encoder accepts too.
func TestValidOpusSettingsMakeAnEncoder(t *testing.T) {
	for _, opus := range []OpusConfig{Defaults().Opus, {BitrateBPS: 6000}, {Complexity: 10, BitrateBPS: 300000, FEC: true, PacketLossPercent: 100}, {}} {
		cfg := Defaults()
		cfg.Opus = opus
		if cfg.Validate() != nil {
			continue
		}
		enc, err := codec.NewEncoder(codec.Opus, 48000, cfg.engineConfig().Opus)
		if err != nil {
			t.Fatalf("opus %+v passed validation, but: %v", opus, err)
		}
		enc.Close()
	}
}

// The defaults pass validation and hold room for calls.
func TestDefaultsAreValid(t *testing.T) {
	cfg := Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.RTP.MediaTimeout <= 0 || cfg.RTP.HoldTimeout <= 0 || cfg.RTP.PortMax-cfg.RTP.PortMin < 1000 {
		t.Fatalf("defaults %+v", cfg.RTP)
	}
}

// A node whose start fails after the media engine is up still stops the
// engine: its event loops, sweeper and sockets do not outlive Run.
func TestRunStopsTheEngineWhenTheNodeFailsToStart(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	before := goleak.IgnoreCurrent()
	fds := openFDs(t)
	cfg := Defaults()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Bus.URL = srv.URL()
	cfg.Node.ID = "media-failstart"
	cfg.RTP.PortMin, cfg.RTP.PortMax = 23400, 23499
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// Drained before it started: the node gives up on its setup.
	drain, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(drain, make(chan struct{}), cfg, zerolog.Nop(), prometheus.NewRegistry()); err == nil {
		t.Fatal("Run of a node drained before it started returned no error")
	}
	goleak.VerifyNone(t, before)
	if after := openFDs(t); after != fds {
		t.Fatalf("%d descriptors open after Run, %d before", after, fds)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// As the proxy does: an empty NATS_URL (a container env left blank) keeps
// the file's bus, and http.addr takes the forms net.Listen does.
func TestEmptyNATSURLAndListenForms(t *testing.T) {
	path := filepath.Join(t.TempDir(), "media.yaml")
	if err := os.WriteFile(path, []byte("bus:\n  url: nats://bus.example:4222\nhttp:\n  addr: \":9102\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_URL", "")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bus.URL != "nats://bus.example:4222" || cfg.HTTP.Addr != ":9102" {
		t.Fatalf("bus %q, http %q", cfg.Bus.URL, cfg.HTTP.Addr)
	}
}
