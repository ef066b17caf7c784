package app

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// DefaultGCPercent is the proxy's garbage-collection target: the heap may
// grow to five times what is live before a collection. Every SIP message
// allocates its parsed headers and every transaction stays live for the
// RFC 3261 timers (32 s for a 2xx-answered INVITE), so the live heap is large
// and collection cost follows the allocation rate divided by this
// percentage: at Go's default of 100 collection took about a sixth of the
// proxy's CPU at 4,000 calls/s (docs/benchmarks.md, "Proxy call rate").
const DefaultGCPercent = 400

// cgroupMemoryMax is where a container's memory limit is read (cgroup v2).
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// cgroupLimitShare is the part of a container's memory limit given to the
// Go heap when no limit is configured, leaving room for stacks and buffers.
const cgroupLimitShare = 0.9

// RuntimeConfig tunes the Go runtime. The GOGC and GOMEMLIMIT environment
// variables win over both settings.
type RuntimeConfig struct {
	// GCPercent is the heap growth over the live heap, in percent, that
	// starts a garbage collection (Go's GOGC); -1 turns collection off
	// unless a memory limit applies. Default 400.
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimitMB is a soft limit on the Go runtime's memory in MiB,
	// near which it collects more often whatever GCPercent says. Default 0:
	// 90 % of the container's cgroup memory limit when there is one,
	// otherwise none.
	MemoryLimitMB int64 `yaml:"memory_limit_mb"`
}

// applyRuntime sets the collector's target and memory limit.
func applyRuntime(cfg RuntimeConfig, log zerolog.Logger) {
	ev := log.Debug()
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(cfg.GCPercent)
		ev = ev.Int("gc_percent", cfg.GCPercent)
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		limit := cfg.MemoryLimitMB << 20
		if limit == 0 {
			limit = int64(float64(cgroupMemoryLimit()) * cgroupLimitShare)
		}
		if limit > 0 {
			debug.SetMemoryLimit(limit)
			ev = ev.Int64("memory_limit_bytes", limit)
		}
	}
	ev.Msg("go runtime tuned")
}

// cgroupMemoryLimit returns the container's memory limit in bytes, or 0
// when there is none or it cannot be read.
func cgroupMemoryLimit() int64 {
	data, err := os.ReadFile(cgroupMemoryMax)
	if err != nil {
		return 0
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil { // "max": no limit
		return 0
	}
	return v
}
