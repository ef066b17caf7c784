package engine

import (
	"fmt"
	"sync"
	"sync/atomic"

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
	dropTooLate
	numDropReasons
)

var dropReasonLabels = [numDropReasons]string{
	dropWrongSource:        "wrong_source",
	dropMalformed:          "malformed",
	dropUnknownPayloadType: "unknown_payload_type",
	dropNoDestination:      "no_destination",
	dropCodecError:         "codec_error",
	dropTooLate:            "too_late",
}

type metrics struct {
	sessionsStarted *prometheus.CounterVec
	rtcpPackets     *prometheus.CounterVec
	rtcpIn, rtcpOut prometheus.Counter
	readErrors      prometheus.Counter
	codecSwitches   prometheus.Counter
	drops           [numDropReasons]prometheus.Counter
	jitter          prometheus.Histogram
	loss            prometheus.Histogram
	mos             prometheus.Histogram

	shards int // one per event loop
	mu     sync.Mutex
	byCode map[string][]trafficShard
}

// trafficShard counts one codec's packets for the sessions of one event
// loop. Each loop writes only its own shard, on a cache line of its own, so
// the per-packet counting never bounces a line between cores; a scrape adds
// the shards up.
type trafficShard struct {
	packetsIn, packetsOut, bytesIn, bytesOut atomic.Uint64
	_                                        [64 - 4*8]byte
}

var (
	packetsDesc = prometheus.NewDesc("media_rtp_packets_total",
		"RTP packets received from (in) and sent to (out) endpoints.", []string{"direction", "codec"}, nil)
	bytesDesc = prometheus.NewDesc("media_rtp_bytes_total",
		"RTP bytes (UDP payload) received from (in) and sent to (out) endpoints.", []string{"direction", "codec"}, nil)
)

// trafficCollector exposes the sharded packet and byte counts.
type trafficCollector struct{ m *metrics }

func (c trafficCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- bytesDesc
}

func (c trafficCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for name, shards := range c.m.byCode {
		var pin, pout, bin, bout uint64
		for j := range shards {
			sh := &shards[j]
			pin += sh.packetsIn.Load()
			pout += sh.packetsOut.Load()
			bin += sh.bytesIn.Load()
			bout += sh.bytesOut.Load()
		}
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(pin), "in", name)
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(pout), "out", name)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(bin), "in", name)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(bout), "out", name)
	}
}

func newMetrics(reg prometheus.Registerer, pool *portpool.Pool, shards int) (*metrics, error) {
	m := &metrics{
		shards: max(shards, 1),
		sessionsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "media_sessions_started_total", Help: "Media sessions created, by service.",
		}, []string{"service"}),
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
		codecSwitches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "media_codec_switches_total", Help: "Endpoints that started sending another codec of their answer.",
		}),
		byCode: map[string][]trafficShard{},
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
		m.sessionsStarted, trafficCollector{m},
		m.rtcpPackets, m.readErrors, m.codecSwitches, drops, m.jitter, m.loss, m.mos, inUse, total,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register media metrics: %w", err)
		}
	}
	return m, nil
}

// forCodec returns the traffic counters of a codec label for the sessions
// of event loop shard.
func (m *metrics) forCodec(name string, shard int) *trafficShard {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.byCode[name]
	if !ok {
		c = make([]trafficShard, m.shards)
		m.byCode[name] = c
	}
	return &c[shard%m.shards]
}
