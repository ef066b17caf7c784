package app

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

// TestRunServesLocationMetrics: a replica running on an embedded bus
// serves the location store's series on its registry from the start,
// every labelled one at zero, before any registration.
func TestRunServesLocationMetrics(t *testing.T) {
	cfg := Defaults()
	cfg.Bus.Embedded.Port = -1
	cfg.Bus.Embedded.StoreDir = t.TempDir()
	cfg.SIP.ListenAddr = "127.0.0.1:0"
	cfg.HTTP.Addr = "127.0.0.1:0"
	reg := prometheus.NewRegistry()
	drain, stop := context.WithCancel(context.Background())
	hard := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- Run(drain, hard, cfg, zerolog.New(io.Discard), reg) }()
	defer func() {
		stop()
		close(hard)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not return after drain")
		}
	}()

	want := []string{
		`sip_proxy_location_aors`,
		`sip_proxy_location_bindings_expired_total`,
		`sip_proxy_location_bucket_recreations_total`,
		`sip_proxy_location_bus_errors_total{op="read"}`,
		`sip_proxy_location_bus_errors_total{op="recreate"}`,
		`sip_proxy_location_bus_errors_total{op="status"}`,
		`sip_proxy_location_bus_errors_total{op="watch"}`,
		`sip_proxy_location_bus_errors_total{op="write"}`,
		`sip_proxy_location_resyncs_total{reason="bucket_missing"}`,
		`sip_proxy_location_resyncs_total{reason="bucket_replaced"}`,
		`sip_proxy_location_resyncs_total{reason="watcher_closed"}`,
		`sip_proxy_location_update_conflicts_total{outcome="gave_up"}`,
		`sip_proxy_location_update_conflicts_total{outcome="retried"}`,
	}
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The proxy's own series appear once the SIP server is built:
		// stopping before that would cut its start-up short.
		got = locationSeries(t, reg)
		if (slices.Equal(got, want) && gathered(t, reg, "sip_proxy_registrations_active")) || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run ended early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("location series served:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// gathered reports whether reg serves a family of that name.
func gathered(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return slices.ContainsFunc(families, func(f *dto.MetricFamily) bool { return f.GetName() == name })
}

// locationSeries lists the sip_proxy_location_* series gathered from reg
// with their labels, sorted, each only if its value is zero.
func locationSeries(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out []string
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "sip_proxy_location_") {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetCounter().GetValue() != 0 || m.GetGauge().GetValue() != 0 {
				continue
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := f.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}
