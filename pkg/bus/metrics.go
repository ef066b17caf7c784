package bus

import "github.com/prometheus/client_golang/prometheus"

// metrics of one client. Labels stay small and fixed: the operation kind,
// never a node id or session.
type metrics struct {
	requests        *prometheus.CounterVec   // op, result
	requestDuration *prometheus.HistogramVec // op
	served          *prometheus.CounterVec   // op, status
	handlerPanics   *prometheus.CounterVec   // op
	badPayloads     *prometheus.CounterVec   // op
	published       *prometheus.CounterVec   // kind, result
	reconnects      prometheus.Counter
	disconnects     prometheus.Counter
	connected       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callgrid_bus_requests_total",
			Help: "Requests sent over the bus by operation and result (ok, timeout, no_responders, unavailable, error).",
		}, []string{"op", "result"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "callgrid_bus_request_duration_seconds",
			Help:    "Round trip of bus requests that got a reply.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callgrid_bus_served_total",
			Help: "Requests served from the bus by operation and reply status.",
		}, []string{"op", "status"}),
		handlerPanics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callgrid_bus_handler_panics_total",
			Help: "Requests whose handler panicked (answered STATUS_INTERNAL), by operation.",
		}, []string{"op"}),
		badPayloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callgrid_bus_bad_payloads_total",
			Help: "Messages whose payload could not be decoded, by operation.",
		}, []string{"op"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callgrid_bus_events_published_total",
			Help: "Events published by kind and result.",
		}, []string{"kind", "result"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callgrid_bus_reconnects_total",
			Help: "Times the connection to the bus was re-established.",
		}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callgrid_bus_disconnects_total",
			Help: "Times the connection to the bus was lost.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callgrid_bus_connected",
			Help: "1 while connected to the bus, 0 otherwise.",
		}),
	}
	reg.MustRegister(m.requests, m.requestDuration, m.served, m.handlerPanics, m.badPayloads, m.published, m.reconnects, m.disconnects, m.connected)
	// Series exist from the start, so dashboards and alerts see zeros
	// rather than nothing on an idle process.
	for _, op := range []MediaOp{OpOffer, OpAnswer, OpUpdate, OpDelete} {
		o := string(op)
		m.requests.WithLabelValues(o, "ok")
		m.requests.WithLabelValues(o, "timeout")
		m.requestDuration.WithLabelValues(o)
		m.served.WithLabelValues(o, "STATUS_OK")
		m.badPayloads.WithLabelValues(o)
		m.handlerPanics.WithLabelValues(o)
	}
	return m
}
