package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"callgrid.dev/pkg/bus"
	"callgrid.dev/pkg/fleet"
	"callgrid.dev/pkg/obs"
	"callgrid.dev/services/proxy/internal/location"
	"callgrid.dev/services/proxy/internal/sipproxy"
)

// Version is set at build time with -ldflags "-X ...app.Version=...".
var Version = "dev"

const (
	// drainGrace bounds how long a draining replica waits for its SIP
	// transactions: past Timer C a transaction cannot legitimately live.
	drainGrace = sipproxy.DefaultInviteTimeout + 5*time.Second
	drainPoll  = 100 * time.Millisecond
	setupLimit = 15 * time.Second
)

// Run runs a proxy replica until drain is cancelled and its transactions
// have finished (or hard is closed), and returns once everything it started
// has stopped.
func Run(drain context.Context, hard <-chan struct{}, cfg Config, log zerolog.Logger, reg *prometheus.Registry) error {
	applyRuntime(cfg.Runtime, log)
	sipproxy.ApplyTransactionLinger(cfg.SIP.WithDefaults().TransactionLinger)
	sipproxy.ApplyUDPLimits(cfg.SIP)
	setup, cancelSetup := context.WithTimeout(drain, setupLimit)
	defer cancelSetup()
	client, err := bus.Connect(setup, cfg.Bus, "proxy", log, reg)
	if err != nil {
		return err
	}
	defer client.Close()
	if _, err := client.EnsureEventsStream(setup); err != nil {
		return err
	}
	store, err := location.NewKVStore(setup, client.JetStream(), cfg.Location, log, location.WithRegisterer(reg))
	if err != nil {
		return err
	}
	fleetKV, err := fleet.OpenBucket(setup, client, cfg.Media.HeartbeatInterval, 0)
	if err != nil {
		return err
	}
	callsKV, err := fleet.OpenCallsBucket(setup, client, 0)
	if err != nil {
		return err
	}
	// The view reports leaving nodes before the SIP server exists; the
	// collection outlives both, so nothing is lost in between.
	leaves := sipproxy.NewNodeLeaves()
	view := fleet.NewView(client, fleetKV, cfg.Media.HeartbeatInterval, log, reg, fleet.WithLeaveHandler(leaves.Add))
	claimer := fleet.NewClaimer(client, view, cfg.Media.Claim, log, reg)
	// Before the client closes: its releases still being retried stop.
	defer claimer.Close()
	srv, err := sipproxy.New(cfg.SIP, log, reg,
		sipproxy.WithLocationStore(store),
		sipproxy.WithBus(client),
		sipproxy.WithMedia(sipproxy.MediaOptions{
			Control:        claimer,
			Nodes:          func() []string { return nodeIDs(view) },
			Mode:           cfg.Media.Mode,
			RetryAfter:     cfg.Media.RetryAfter,
			RequestTimeout: cfg.Media.RequestTimeout,
			OrphanGrace:    cfg.Media.OrphanGrace,
		}),
		sipproxy.WithOrphanedCalls(callsKV, leaves),
	)
	if err != nil {
		return fmt.Errorf("sip server: %w", err)
	}
	web, err := obs.NewHTTPServer(cfg.HTTP.Addr, reg, func() error {
		switch {
		case srv.Draining():
			return errors.New("draining")
		case !client.Connected():
			return bus.ErrUnavailable
		}
		return nil
	}, log)
	if err != nil {
		return err
	}

	// Background parts live until the SIP server has finished. The SIP
	// server runs the location store's watch itself.
	bg, stopBG := context.WithCancel(context.Background())
	sipCtx, stopSIP := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sipErr, webErr error
	wg.Go(func() { _ = view.Run(bg) })
	wg.Go(func() { webErr = web.Run(bg) })
	sipDone := make(chan struct{})
	go func() {
		defer close(sipDone)
		sipErr = srv.Run(sipCtx)
	}()
	log.Info().Str("version", Version).Msg("proxy serving")

	select {
	case <-drain.Done():
		srv.Drain()
		waitForTransactions(srv, hard, log)
	case <-sipDone:
	}
	stopSIP()
	<-sipDone
	stopBG()
	wg.Wait()
	log.Info().Msg("proxy stopped")
	return errors.Join(sipErr, webErr)
}

// nodeIDs lists the nodes in the fleet view.
func nodeIDs(view *fleet.View) []string {
	nodes := view.Nodes()
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.GetNodeId()
	}
	return ids
}

func waitForTransactions(srv *sipproxy.Server, hard <-chan struct{}, log zerolog.Logger) {
	deadline := time.NewTimer(drainGrace)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for srv.InFlight() > 0 {
		select {
		case <-deadline.C:
			log.Warn().Int("in_flight", srv.InFlight()).Msg("drain grace over: stopping with transactions in flight")
			return
		case <-hard:
			log.Warn().Int("in_flight", srv.InFlight()).Msg("stopping now")
			return
		case <-tick.C:
		}
	}
}
