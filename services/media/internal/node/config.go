package node

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
)

// Figures measured with make bench-media on the reference 2-core machine
// (docs/benchmarks.md, "Media node load"), at the low end of the runs:
// relayed PCMU calls per core of node CPU with p99 added latency under
// 1 ms, and PCMU<->Opus calls per core at zero loss.
const (
	measuredRelayedCallsPerCore    = 1900
	measuredTranscodedCallsPerCore = 120
	// planningUtilisation leaves headroom for bursts and for the kernel's
	// share of packet delivery.
	planningUtilisation = 0.7
)

// Defaults for Config fields left zero.
const (
	DefaultPassthroughCost = 1
	// DefaultTranscodeCost: a transcoded call costs as much CPU as this many
	// relayed ones (1900 / 120, rounded up): relaying a packet costs a few
	// microseconds, encoding a 20 ms Opus frame about a hundred.
	DefaultTranscodeCost = (measuredRelayedCallsPerCore + measuredTranscodedCallsPerCore - 1) / measuredTranscodedCallsPerCore
	DefaultDrainGrace    = 2 * time.Hour
	// DefaultSetupTimeout outlasts any ringing a proxy allows (Timer C, 3
	// minutes by default) with room to spare.
	DefaultSetupTimeout = 10 * time.Minute
)

// DefaultCapacityUnits is what a node offers before its operator has
// measured it: the measured relayed calls per core, times the cores this
// process may use, at the planning utilisation.
func DefaultCapacityUnits() int {
	return int(float64(runtime.GOMAXPROCS(0)) * measuredRelayedCallsPerCore * planningUtilisation)
}

// DefaultsForPorts returns the capacity and transcode cost a node offers
// by default when its port range holds only calls calls. Units stand for
// CPU: when the ports run out before the CPU does, a transcoded call takes
// a smaller share of the capacity the ports leave, so its cost shrinks in
// proportion (never below the passthrough cost) and a small node can still
// transcode every call it can hold.
func DefaultsForPorts(calls, passthroughCost int) (units, transcodeCost int) {
	cpuUnits := DefaultCapacityUnits()
	units = max(1, min(cpuUnits, calls))
	transcodeCost = (DefaultTranscodeCost*units + cpuUnits - 1) / cpuUnits
	return units, max(transcodeCost, passthroughCost, DefaultPassthroughCost)
}

// Config of the node's control layer.
type Config struct {
	// ID is the node's unique id, a subject token.
	ID string `yaml:"id"`
	// AdvertiseAddress is the RTP address peers are told to send to.
	AdvertiseAddress string `yaml:"advertise_address"`
	// CapacityUnits the node offers to the fleet.
	CapacityUnits int `yaml:"capacity_units"`
	// PassthroughCost and TranscodeCost are the units a relayed and a
	// transcoded session use.
	PassthroughCost int `yaml:"passthrough_cost"`
	TranscodeCost   int `yaml:"transcode_cost"`
	// HeartbeatInterval between status writes.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// DrainGrace is how long a draining node waits for its calls to end
	// before it ends them itself.
	DrainGrace time.Duration `yaml:"drain_grace"`
	// SetupTimeout ends a session that has had no final answer for this
	// long: the proxy that claimed it died, or its release was lost on the
	// way. It must be longer than the proxies' Timer C.
	SetupTimeout time.Duration `yaml:"setup_timeout"`
	// Codecs the node advertises (SDP names).
	Codecs []string `yaml:"-"`
	// Version the node reports.
	Version string `yaml:"-"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.CapacityUnits == 0 {
		c.CapacityUnits = DefaultCapacityUnits()
	}
	if c.PassthroughCost == 0 {
		c.PassthroughCost = DefaultPassthroughCost
	}
	if c.TranscodeCost == 0 {
		c.TranscodeCost = DefaultTranscodeCost
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = fleet.DefaultHeartbeatInterval
	}
	if c.DrainGrace == 0 {
		c.DrainGrace = DefaultDrainGrace
	}
	if c.SetupTimeout == 0 {
		c.SetupTimeout = DefaultSetupTimeout
	}
	return c
}

// Validate names every field that cannot work.
func (c Config) Validate() error {
	var errs []error
	if err := bus.ValidateToken(c.ID); err != nil {
		errs = append(errs, fmt.Errorf("node.id: %w", err))
	}
	if c.ID == fleet.ReservedNodeID {
		errs = append(errs, fmt.Errorf("node.id: %q is reserved for the fleet's own keys", c.ID))
	}
	if c.CapacityUnits <= 0 {
		errs = append(errs, fmt.Errorf("node.capacity_units: must be positive, got %d", c.CapacityUnits))
	}
	if c.PassthroughCost <= 0 {
		errs = append(errs, fmt.Errorf("node.passthrough_cost: must be positive, got %d", c.PassthroughCost))
	}
	if c.TranscodeCost < c.PassthroughCost {
		errs = append(errs, fmt.Errorf("node.transcode_cost: must be at least passthrough_cost (%d), got %d", c.PassthroughCost, c.TranscodeCost))
	}
	if c.HeartbeatInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("node.heartbeat_interval: must be at least 10ms, got %s", c.HeartbeatInterval))
	}
	if c.SetupTimeout < 0 {
		errs = append(errs, fmt.Errorf("node.setup_timeout: must not be negative, got %s", c.SetupTimeout))
	}
	if c.DrainGrace < 0 {
		errs = append(errs, fmt.Errorf("node.drain_grace: must not be negative, got %s", c.DrainGrace))
	}
	return errors.Join(errs...)
}
