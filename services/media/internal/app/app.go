package app

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/obs"
	"callgrid.dev/services/media/internal/engine"
	"callgrid.dev/services/media/internal/node"
)

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

// Run runs a media node until drain is cancelled and its calls have ended
// (or hard is closed), and returns once everything it started has stopped.
func Run(drain context.Context, hard <-chan struct{}, cfg Config, log zerolog.Logger, reg *prometheus.Registry) error {
	// The node adds node_id to its own logger; given it twice, zerolog
	// writes the key twice, and log stores that reject duplicate keys
	// (Elasticsearch) drop every line of the control layer.
	nodeLog := log
	log = log.With().Str("node_id", cfg.Node.ID).Logger()
	setup, cancel := context.WithCancel(drain)
	defer cancel()
	client, err := bus.Connect(setup, cfg.Bus, "media-"+cfg.Node.ID, log, reg)
	if err != nil {
		return err
	}
	defer client.Close()

	var n *node.Node
	eng, err := engine.New(cfg.engineConfig(), log, reg, engine.WithTimeoutHandler(func(id string, q engine.Quality) {
		n.HandleMediaTimeout(id, qualityProto(q))
	}), engine.WithTranscodingHandler(func(id string, transcoding bool) {
		if n != nil {
			n.HandleTranscodingChange(id, transcoding)
		}
	}))
	if err != nil {
		return fmt.Errorf("media engine: %w", err)
	}
	// The node shuts the engine down once it has served, but not when its
	// start fails; a second Close does nothing.
	defer eng.Close()
	nodeCfg := cfg.Node
	nodeCfg.Version = Version
	if nodeCfg.CapacityUnits == 0 {
		// Unset: the measured per-core figure, capped by the port range (a
		// call holds a port pair per leg).
		_, pairs := eng.PortUsage()
		units, transcodeCost := node.DefaultsForPorts(pairs/2, nodeCfg.PassthroughCost)
		nodeCfg.CapacityUnits = units
		if nodeCfg.TranscodeCost == 0 {
			nodeCfg.TranscodeCost = transcodeCost
		}
	}
	for _, c := range eng.Config().Codecs {
		nodeCfg.Codecs = append(nodeCfg.Codecs, string(c))
	}
	n, err = node.New(nodeCfg, nodeLog, reg, client, engineMedia{eng}, node.WithPortUsage(eng.PortUsage))
	if err != nil {
		return err
	}
	web, err := obs.NewHTTPServer(cfg.HTTP.Addr, reg, func() error {
		switch {
		case n.Draining():
			return errors.New("draining")
		case !client.Connected():
			return bus.ErrUnavailable
		}
		return nil
	}, log)
	if err != nil {
		return err
	}

	webCtx, stopWeb := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var webErr error
	wg.Go(func() { webErr = web.Run(webCtx) })
	stopWatch := make(chan struct{})
	wg.Go(func() {
		select {
		case <-hard:
			n.StopNow()
		case <-stopWatch:
		}
	})
	runErr := n.Run(drain)
	close(stopWatch)
	stopWeb()
	wg.Wait()
	return errors.Join(runErr, webErr)
}
