package proxy

import (
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// metrics are comfyshim's Prometheus series, on a registry of its own.
type metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	upstreamErrors prometheus.Counter
	websockets     prometheus.Gauge
	reloads        prometheus.Counter
	reloadFailures prometheus.Counter
	writeDuration  prometheus.Histogram
	writeFailures  prometheus.Counter
	compactions    *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "comfyshim_http_requests_total", Help: "Requests by route group (local, forwarded, websocket, internal) and status class.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "comfyshim_http_request_duration_seconds", Help: "Request latency by route group and status class (websockets: connection lifetime).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"route", "code"}),
		upstreamErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "comfyshim_upstream_errors_total", Help: "Forwarded requests that failed to reach ComfyUI.",
		}),
		websockets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "comfyshim_websockets_open", Help: "Websockets currently carried.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "comfyshim_sidecar_reloads_total", Help: "Reloads of the tags file after an external edit.",
		}),
		reloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "comfyshim_sidecar_reload_failures_total", Help: "External edits of the tags file that did not parse.",
		}),
		writeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "comfyshim_sidecar_write_duration_seconds", Help: "Durable writes of tag changes (journal append and fdatasync; one per group commit).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		compactions: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "comfyshim_sidecar_compaction_duration_seconds", Help: "Compactions of the journal into the tags file (write, fsync, swap, fsync folder), by result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"result"}),
		writeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "comfyshim_sidecar_write_failures_total", Help: "Writes of the tags file that failed.",
		}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.upstreamErrors, m.websockets, m.reloads, m.reloadFailures,
		m.writeDuration, m.writeFailures, m.compactions, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

var statusClasses = [...]string{"", "1xx", "2xx", "3xx", "4xx", "5xx"}

func (m *metrics) observe(route string, status int, d time.Duration) {
	code := "other"
	if c := status / 100; c >= 1 && c <= 5 {
		code = statusClasses[c]
	}
	m.requests.WithLabelValues(route, code).Inc()
	m.duration.WithLabelValues(route, code).Observe(d.Seconds())
}

func (m *metrics) sidecarReloaded(err error) {
	m.reloads.Inc()
	if err != nil {
		m.reloadFailures.Inc()
	}
}

func (m *metrics) sidecarCompacted(d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.compactions.WithLabelValues(result).Observe(d.Seconds())
}

func (m *metrics) sidecarWritten(d time.Duration, err error) {
	if err != nil {
		m.writeFailures.Inc()
		return
	}
	m.writeDuration.Observe(d.Seconds())
}

// registerAssetGauges adds the sizes of the asset library. They read the
// current join; a scrape never rebuilds anything.
func (m *metrics) registerAssetGauges(lib *assets.Library) {
	gauge := func(name, help string, pick func(assets, tags, sidecar int) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(pick(lib.Stats())) })
	}
	m.reg.MustRegister(
		gauge("comfyshim_assets", "Asset files listed.", func(a, _, _ int) int { return a }),
		gauge("comfyshim_tags", "Distinct tags on listed assets.", func(_, t, _ int) int { return t }),
		gauge("comfyshim_sidecar_assets", "Assets with an entry in the tags file.", func(_, _, s int) int { return s }),
	)
}

// registerRelayCounter counts job events not copied to a socket whose queue
// was full (a client that stopped reading).
func (m *metrics) registerRelayCounter(dropped func() int64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "comfyshim_websocket_frames_dropped_total",
		Help: "Job event frames not copied to a websocket because its queue was full.",
	}, func() float64 { return float64(dropped()) }))
}

func (m *metrics) handler() gin.HandlerFunc {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return func(c *gin.Context) { h.ServeHTTP(c.Writer, c.Request) }
}
