package sipproxy

import (
	"fmt"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's Prometheus series. Labels are small fixed sets:
// method, status class, reason, gateway group and gateway name from config.
type metrics struct {
	requests        *prometheus.CounterVec
	responses       *prometheus.CounterVec
	txDuration      *prometheus.HistogramVec
	postDialDelay   *prometheus.HistogramVec
	registrations   prometheus.GaugeFunc
	authFailures    *prometheus.CounterVec
	rateLimited     prometheus.Counter
	dropped         *prometheus.CounterVec
	gatewayUp       *prometheus.GaugeVec
	gatewayFailures *prometheus.CounterVec
	gatewayDowns    *prometheus.CounterVec
	idleClosed      *prometheus.CounterVec
	forwardFailures *prometheus.CounterVec
	inflight        prometheus.Gauge
	mediaRequests   *prometheus.CounterVec
	mediaHangups    *prometheus.CounterVec
	eventsDropped   *prometheus.CounterVec
	udpMTUExceeded  *prometheus.CounterVec
	udpMTUTCPSkips  prometheus.Counter
	firstMsgClosed  *prometheus.CounterVec
	cancelRelays    *prometheus.CounterVec
	cancelsRelayed  *prometheus.CounterVec
	forkedBranches  *prometheus.CounterVec
	registrationsFn func() int
}

func newMetrics(reg prometheus.Registerer, activeRegistrations func() int) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_requests_total",
			Help: "SIP requests received, by method.",
		}, []string{"method"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_responses_total",
			Help: "SIP responses sent upstream, by status class.",
		}, []string{"class"}),
		txDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sip_proxy_transaction_duration_seconds",
			Help:    "Time from request to final response sent upstream, by method.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 180},
		}, []string{"method"}),
		postDialDelay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sip_proxy_post_dial_delay_seconds",
			Help:    "Time from a new call's INVITE to the first response past 100 Trying sent upstream (RFC 6076 session request delay), by what that response was: progress (18x), answered (2xx before any 18x) or failed (3xx-6xx, a cancelled call's 487 left out).",
			Buckets: []float64{.1, .25, .5, 1, 2, 3, 5, 8, 13, 20, 30},
		}, []string{"outcome"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_auth_failures_total",
			Help: "Digest authentication failures, by reason.",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sip_proxy_rate_limited_total",
			Help: "Messages dropped by the per-source rate limiter.",
		}),
		udpMTUExceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_udp_mtu_exceeded_total",
			Help: "Requests larger than udp_mtu to UDP targets that take TCP, by the transport they went over (udp: no TCP connection could be made).",
		}, []string{"sent_over"}),
		udpMTUTCPSkips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sip_proxy_udp_mtu_tcp_skipped_total",
			Help: "Requests larger than udp_mtu sent straight over UDP, without trying TCP, because a TCP connection to their target failed in the last minutes (also counted in sip_proxy_udp_mtu_exceeded_total{sent_over=\"udp\"}).",
		}),
		firstMsgClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_connections_first_message_timeout_total",
			Help: "TCP and TLS connections closed because no complete SIP message (for TLS: no finished handshake either) came within tcp_first_message_timeout of their accept, by transport.",
		}, []string{"transport"}),
		cancelRelays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_cancel_relays_total",
			Help: "CANCELs matching no transaction here that were offered to the other replicas, by result: accepted (a replica cancelled its INVITE; answered 200), unmatched (none did in time, or no other replica listens; 481), limited (too many pending; 481 without asking), unavailable (bus away; 481), repeated (a retransmission of one offered, answered as it was without asking again).",
		}, []string{"result"}),
		cancelsRelayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_cancels_relayed_in_total",
			Help: "CANCELs other replicas offered to this one over the bus, by result: cancelled (it held the INVITE), unmatched, malformed.",
		}, []string{"result"}),
		forkedBranches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_forked_branches_total",
			Help: "Branches of requests forked in parallel to several contacts of a registered user of equal q-value, by how each ended: answered (its 2xx went upstream), failed (a final non-2xx, or no transport), timeout (no answer, Timer C), cancelled (the caller cancelled), elsewhere (cancelled by the proxy after another branch answered or declined with a 6xx).",
		}, []string{"result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_dropped_total",
			Help: "Messages dropped or rejected as malformed or unwanted, by reason.",
		}, []string{"reason"}),
		gatewayUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sip_proxy_gateway_up",
			Help: "1 when the gateway is in rotation (OPTIONS probes and failed calls decide), by group and gateway.",
		}, []string{"group", "gateway"}),
		gatewayFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_gateway_failures_total",
			Help: "Calls that failed on the gateway itself, by group, gateway and reason (timeout, transport, response).",
		}, []string{"group", "gateway", "reason"}),
		gatewayDowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_gateway_down_total",
			Help: "Times a gateway was taken out of rotation, by group, gateway and reason (probe, timeout, transport, response).",
		}, []string{"group", "gateway", "reason"}),
		idleClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_connections_idle_closed_total",
			Help: "TCP and TLS connections closed after tcp_idle_timeout without traffic, by transport.",
		}, []string{"transport"}),
		forwardFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_forward_failures_total",
			Help: "Requests the proxy answered with an error itself, by reason.",
		}, []string{"reason"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sip_proxy_inflight_transactions",
			Help: "Requests being handled right now.",
		}),
		mediaRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_media_requests_total",
			Help: "Media session requests (offer, answer, update, delete) by result reason (ok or the failure reason).",
		}, []string{"op", "result"}),
		mediaHangups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_media_hangups_total",
			Help: "BYEs the proxy sent on its own to a leg of an anchored call, by cause (media_timeout, node_down).",
		}, []string{"cause"}),
		eventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_events_dropped_total",
			Help: "Call events dropped because the publish queue was full, by kind.",
		}, []string{"kind"}),
		registrationsFn: activeRegistrations,
	}
	m.registrations = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sip_proxy_registrations_active",
		Help: "Live contact bindings in this replica's view of the location store.",
	}, func() float64 { return float64(m.registrationsFn()) })
	for _, c := range []prometheus.Collector{
		m.requests, m.responses, m.txDuration, m.postDialDelay, m.registrations, m.authFailures,
		m.rateLimited, m.dropped, m.gatewayUp, m.gatewayFailures, m.gatewayDowns,
		m.idleClosed, m.forwardFailures, m.inflight,
		m.mediaRequests, m.mediaHangups, m.eventsDropped, m.udpMTUExceeded,
		m.udpMTUTCPSkips, m.firstMsgClosed, m.cancelRelays, m.cancelsRelayed,
		m.forkedBranches,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	// Series exist from the start, so dashboards and alerts see zeros
	// rather than nothing on an idle proxy.
	for _, method := range []string{"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "MESSAGE"} {
		m.requests.WithLabelValues(method)
		m.txDuration.WithLabelValues(method)
	}
	for _, class := range statusClasses {
		m.responses.WithLabelValues(class)
	}
	for _, outcome := range []string{dialProgress, dialAnswered, dialFailed} {
		m.postDialDelay.WithLabelValues(outcome)
	}
	for _, reason := range []string{"malformed", "too_large", "unparsable", "stray_response"} {
		m.dropped.WithLabelValues(reason)
	}
	for _, tp := range []string{"tcp", "tls"} {
		m.idleClosed.WithLabelValues(tp)
		m.firstMsgClosed.WithLabelValues(tp)
	}
	for _, result := range []string{cancelRelayAccepted, cancelRelayUnmatched, cancelRelayLimited, cancelRelayUnavailable, cancelRelayRepeated} {
		m.cancelRelays.WithLabelValues(result)
	}
	for _, result := range []string{cancelRelayCancelled, cancelRelayUnmatched, cancelRelayMalformed} {
		m.cancelsRelayed.WithLabelValues(result)
	}
	for _, result := range []string{forkAnswered, forkFailed, forkTimeout, forkCancelled, forkElsewhere} {
		m.forkedBranches.WithLabelValues(result)
	}
	for _, tp := range []string{"tcp", "udp"} {
		m.udpMTUExceeded.WithLabelValues(tp)
	}
	m.authFailures.WithLabelValues("wrong_response")
	m.forwardFailures.WithLabelValues("no_route")
	return m, nil
}

// methodLabel bounds the method label to the methods SIP defines.
func methodLabel(m sip.RequestMethod) string {
	switch m {
	case sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER, sip.OPTIONS,
		sip.SUBSCRIBE, sip.NOTIFY, sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK,
		sip.UPDATE, sip.PUBLISH:
		return string(m)
	}
	return "other"
}

// statusClasses are the class labels of 1xx to 6xx, so counting a response
// formats nothing.
var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "6xx"}

func statusClass(code int) string {
	if code < 100 || code > 699 {
		return "other"
	}
	return statusClasses[code/100-1]
}
