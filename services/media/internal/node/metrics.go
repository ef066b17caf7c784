package node

import (
	"github.com/prometheus/client_golang/prometheus"

	callgridv1 "callgrid.dev/pkg/gen/callgridv1"
)

type metrics struct {
	capacity prometheus.Gauge
	sessions prometheus.Gauge
	// transcoded reads the ledger's count when scraped: kept beside the
	// ledger by hand, from outside its lock, it would lag it (an answer
	// adds its change after another request has ended the session), and
	// every path that charges transcoding would have to remember it.
	transcoded prometheus.GaugeFunc
	draining   prometheus.Gauge
	offers     *prometheus.CounterVec
	ended      *prometheus.CounterVec
	timeouts   prometheus.Counter
	// callDuration is answered calls' talk time, from the final answer to
	// the session's end: ACD is its sum over its count.
	callDuration *prometheus.HistogramVec
}

// callDurationBuckets span phone calls, from a few seconds (a wrong number,
// a voicemail hang-up) past the hours a conference or a forgotten line
// runs, densest over the minutes most calls last.
var callDurationBuckets = []float64{5, 10, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 14400}

// newMetrics registers the node's metrics; transcoded counts the sessions
// the ledger has transcoding.
func newMetrics(reg prometheus.Registerer, transcoded func() float64) *metrics {
	m := &metrics{
		capacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callgrid_media_capacity_units", Help: "Capacity units this node offers.",
		}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callgrid_media_sessions_active", Help: "Sessions this node holds.",
		}),
		transcoded: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "callgrid_media_sessions_transcoded", Help: "Sessions this node transcodes.",
		}, transcoded),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callgrid_media_draining", Help: "1 while the node drains.",
		}),
		offers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callgrid_media_offers_total", Help: "Offers (claims) handled by reply status.",
		}, []string{"status"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callgrid_media_sessions_ended_total", Help: "Sessions ended by cause.",
		}, []string{"cause"}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callgrid_media_timeouts_total", Help: "Sessions ended because no RTP arrived.",
		}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "callgrid_media_call_duration_seconds",
			Help:    "Talk time of answered calls, from the final answer to the session's end, by end cause.",
			Buckets: callDurationBuckets,
		}, []string{"cause"}),
	}
	reg.MustRegister(m.capacity, m.sessions, m.transcoded, m.draining, m.offers, m.ended, m.timeouts, m.callDuration)
	// Series exist from the start, so dashboards and alerts see zeros
	// rather than nothing on an idle node.
	for _, status := range []callgridv1.Status{callgridv1.Status_STATUS_OK, callgridv1.Status_STATUS_FULL, callgridv1.Status_STATUS_DRAINING} {
		m.offers.WithLabelValues(status.String())
	}
	for _, cause := range []string{"bye", "cancel", "media_timeout", "shutdown"} {
		m.ended.WithLabelValues(cause)
	}
	for _, cause := range []string{"bye", "media_timeout", "shutdown"} {
		m.callDuration.WithLabelValues(cause)
	}
	return m
}

// observeCall counts an answered call that ended with cause after talking
// for seconds. The cause goes through causeLabel, as for the ended
// counter, so the label set stays small.
func (m *metrics) observeCall(cause string, seconds float64) {
	m.callDuration.WithLabelValues(causeLabel(cause)).Observe(seconds)
}
