package engine

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"callgrid.dev/services/media/internal/portpool"
)

// dropReason is why a packet was discarded; it indexes per-leg drop counts
// and names the metric label.
type dropReason int

const (
	dropWrongSource dropReason = iota
	dropMalformed
	dropUnknownPayloadType
	dropNoDestination
	dropCodecError
	numDropReasons
)

var dropReasonLabels = [numDropReasons]string{
	dropWrongSource:        "wrong_source",
	dropMalformed:          "malformed",
	dropUnknownPayloadType: "unknown_payload_type",
	dropNoDestination:      "no_destination",
	dropCodecError:         "codec_error",
}

type metrics struct {
	sessionsActive      prometheus.Gauge
	sessionsTranscoding prometheus.Gauge
	sessionsStarted     *prometheus.CounterVec
	timeouts            prometheus.Counter
	packets             *prometheus.CounterVec
	bytes               *prometheus.CounterVec
	rtcpPackets         *prometheus.CounterVec
	rtcpIn, rtcpOut     prometheus.Counter
	readErrors          prometheus.Counter
	drops               [numDropReasons]prometheus.Counter
	jitter              prometheus.Histogram
	loss                prometheus.Histogram
	mos                 prometheus.Histogram

	mu     sync.Mutex
	byCode map[string]*codecCounters
}

// codecCounters are the per-packet counters of one codec, bound once so the
// packet path does no label lookups.
type codecCounters struct {
	packetsIn, packetsOut, bytesIn, bytesOut prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, pool *portpool.Pool) (*metrics, error) {
	m := &metrics{
		sessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "media_sessions_active", Help: "Media sessions currently anchored on this node.",
		}),
		sessionsTranscoding: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "media_sessions_transcoding", Help: "Active media sessions whose legs use different codecs.",
		}),
		sessionsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "media_sessions_started_total", Help: "Media sessions created, by service.",
		}, []string{"service"}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "media_session_timeouts_total", Help: "Media sessions ended because a leg sent no RTP for the media timeout.",
		}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "media_rtp_packets_total", Help: "RTP packets received from (in) and sent to (out) endpoints.",
		}, []string{"direction", "codec"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "media_rtp_bytes_total", Help: "RTP bytes (UDP payload) received from (in) and sent to (out) endpoints.",
		}, []string{"direction", "codec"}),
		rtcpPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "media_rtcp_packets_total", Help: "RTCP packets received from (in) and sent to (out) endpoints.",
		}, []string{"direction"}),
		jitter: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "media_leg_jitter_seconds", Help: "Interarrival jitter of each leg at session end.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2},
		}),
		loss: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "media_leg_loss_ratio", Help: "Fraction of RTP packets lost on each leg at session end.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5},
		}),
		mos: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "media_leg_mos", Help: "Estimated mean opinion score of each leg at session end.",
			Buckets: []float64{1, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.4},
		}),
		readErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "media_socket_read_errors_total", Help: "Failed reads of RTP/RTCP sockets (each loses one datagram).",
		}),
		byCode: map[string]*codecCounters{},
	}
	drops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "media_dropped_packets_total", Help: "Packets discarded by the media engine, by reason.",
	}, []string{"reason"})
	for r := range numDropReasons {
		m.drops[r] = drops.WithLabelValues(dropReasonLabels[r])
	}
	m.rtcpIn = m.rtcpPackets.WithLabelValues("in")
	m.rtcpOut = m.rtcpPackets.WithLabelValues("out")
	inUse := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "media_port_pairs_in_use", Help: "RTP/RTCP port pairs allocated.",
	}, func() float64 { return float64(pool.InUse()) })
	total := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "media_port_pairs_total", Help: "RTP/RTCP port pairs in the configured range.",
	}, func() float64 { return float64(pool.Total()) })

	for _, c := range []prometheus.Collector{
		m.sessionsActive, m.sessionsTranscoding, m.sessionsStarted, m.timeouts, m.packets, m.bytes,
		m.rtcpPackets, m.readErrors, drops, m.jitter, m.loss, m.mos, inUse, total,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register media metrics: %w", err)
		}
	}
	return m, nil
}

// forCodec returns the bound counters of a codec label.
func (m *metrics) forCodec(name string) *codecCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.byCode[name]
	if !ok {
		c = &codecCounters{
			packetsIn:  m.packets.WithLabelValues("in", name),
			packetsOut: m.packets.WithLabelValues("out", name),
			bytesIn:    m.bytes.WithLabelValues("in", name),
			bytesOut:   m.bytes.WithLabelValues("out", name),
		}
		m.byCode[name] = c
	}
	return c
}
