// Command proxy runs a SIP proxy replica: registrar, dialplan and
// transaction-stateful forwarding, with media anchored on the fleet.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"callgrid.dev/pkg/lifecycle"
	"callgrid.dev/pkg/obs"
	"callgrid.dev/services/proxy/internal/app"
	"callgrid.dev/services/proxy/internal/sipproxy"
)

func main() {
	configPath := flag.String("config", os.Getenv("PROXY_CONFIG"), "YAML configuration file (optional; PROXY_* variables override it)")
	checkOnly := flag.Bool("check-config", false, "validate the configuration and exit")
	flag.Parse()

	cfg, err := app.Load(*configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "proxy: invalid configuration: %v\n", err)
		os.Exit(2)
	}
	if *checkOnly {
		fmt.Println("configuration ok")
		return
	}
	log := obs.NewLogger(cfg.Log, "proxy", os.Stderr)
	sipproxy.RouteSipgoDefaultLogs(log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	drain, hard, release := lifecycle.Signals()
	defer release()
	if err := app.Run(drain, hard, cfg, log, reg); err != nil {
		log.Error().Err(err).Msg("proxy failed")
		os.Exit(1)
	}
}
