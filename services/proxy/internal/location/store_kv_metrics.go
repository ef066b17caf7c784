package location

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of the KV store's series: small fixed sets, each series
// resolved once so that counting is one atomic add.
const (
	conflictRetried = "retried"
	conflictGaveUp  = "gave_up"

	resyncWatcherClosed  = "watcher_closed"
	resyncBucketMissing  = "bucket_missing"
	resyncBucketReplaced = "bucket_replaced"

	busOpRead     = "read"
	busOpWrite    = "write"
	busOpWatch    = "watch"
	busOpStatus   = "status"
	busOpRecreate = "recreate"
)

// kvMetrics are the KV store's Prometheus series. The counters count
// whether or not they are registered, so a store built without a
// registerer needs no nil checks.
type kvMetrics struct {
	conflicts   *prometheus.CounterVec
	resyncs     *prometheus.CounterVec
	recreations prometheus.Counter
	expired     prometheus.Counter
	busErrors   *prometheus.CounterVec
	replica     *replicaCollector

	conflictRetried, conflictGaveUp                                prometheus.Counter
	resyncWatcherClosed, resyncBucketMissing, resyncBucketReplaced prometheus.Counter
	readErrors, writeErrors, watchErrors, statusErrors             prometheus.Counter
	recreateErrors                                                 prometheus.Counter
}

func newKVMetrics(local *replica) *kvMetrics {
	m := &kvMetrics{
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_location_update_conflicts_total",
			Help: "Compare-and-set writes of an AOR's record by a registration's update that lost to another write (a concurrent registration, or this replica's copy behind the bucket), by outcome: retried (read again and tried once more) or gave_up (the last attempt; the update failed and the registrar answered 500). The sweep's are not counted.",
		}, []string{"outcome"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_location_resyncs_total",
			Help: "Times this replica's watch of the location bucket ended and the next one replays the whole bucket into its copy, by reason: watcher_closed (the bus closed the watch), bucket_missing (the bucket is gone from the server), bucket_replaced (deleted and created again under the watch).",
		}, []string{"reason"}),
		recreations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sip_proxy_location_bucket_recreations_total",
			Help: "Times this replica found the location bucket missing and created it again (or found that another replica had); a failed attempt counts in sip_proxy_location_bus_errors_total{op=\"recreate\"}.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sip_proxy_location_bindings_expired_total",
			Help: "Lapsed contact bindings this replica's sweep deleted from the location bucket; each replica counts what it deleted itself.",
		}),
		busErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sip_proxy_location_bus_errors_total",
			Help: "Requests to the bus about the location bucket that failed (bus away, timeout), by op: read (a record: before the replica is in sync, for an update's fresh read, for the sweep), write (a record's write or delete; a lost compare-and-set is not an error), watch (opening the watch), status (the bucket's state, checked at each watch and every sweep_interval), recreate (creating a missing bucket again).",
		}, []string{"op"}),
		replica: &replicaCollector{
			local: local,
			aors: prometheus.NewDesc("sip_proxy_location_aors",
				"Addresses-of-record with at least one live contact binding in this replica's copy of the location bucket, counted at scrape time (only part of the bucket until the copy has first caught up).", nil, nil),
		},
	}
	// Every series exists from the start, so dashboards and alerts see
	// zeros rather than nothing on an idle replica.
	m.conflictRetried = m.conflicts.WithLabelValues(conflictRetried)
	m.conflictGaveUp = m.conflicts.WithLabelValues(conflictGaveUp)
	m.resyncWatcherClosed = m.resyncs.WithLabelValues(resyncWatcherClosed)
	m.resyncBucketMissing = m.resyncs.WithLabelValues(resyncBucketMissing)
	m.resyncBucketReplaced = m.resyncs.WithLabelValues(resyncBucketReplaced)
	m.readErrors = m.busErrors.WithLabelValues(busOpRead)
	m.writeErrors = m.busErrors.WithLabelValues(busOpWrite)
	m.watchErrors = m.busErrors.WithLabelValues(busOpWatch)
	m.statusErrors = m.busErrors.WithLabelValues(busOpStatus)
	m.recreateErrors = m.busErrors.WithLabelValues(busOpRecreate)
	return m
}

// register adds the series to reg; a second store on one registry fails.
func (m *kvMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.conflicts, m.resyncs, m.recreations, m.expired, m.busErrors, m.replica} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register location metrics: %w", err)
		}
	}
	return nil
}

// replicaCollector counts the replica's AORs when scraped (its contacts are
// sip_proxy_registrations_active, served for every store by the proxy):
// one pass under its read lock, nothing kept up to date on the write path,
// and bindings that lapsed since the last sweep already left out.
type replicaCollector struct {
	local *replica
	aors  *prometheus.Desc
}

func (c *replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.aors
}

func (c *replicaCollector) Collect(ch chan<- prometheus.Metric) {
	aors, _ := c.local.totals(time.Now())
	ch <- prometheus.MustNewConstMetric(c.aors, prometheus.GaugeValue, float64(aors))
}
