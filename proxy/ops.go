package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// cors answers every CORS preflight itself, so none is forwarded and none
// needs a key, and marks responses for the configured cross-origin
// frontends. Only origins in allowed get Access-Control-Allow-* headers; a
// cross-site origin not in the list never gets here (originGuard refuses it).
func cors(allowed []string) gin.HandlerFunc {
	allow := map[string]bool{}
	for _, o := range allowed {
		allow[strings.ToLower(o)] = true
	}
	return func(c *gin.Context) {
		r := c.Request
		origin := r.Header.Get("Origin")
		ok := origin != "" && allow[strings.ToLower(origin)]
		h := c.Writer.Header()
		if ok {
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if ok {
				h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
				h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
				if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
					h.Set("Access-Control-Allow-Headers", req)
				}
				h.Set("Access-Control-Max-Age", "600")
			}
			c.AbortWithStatus(http.StatusNoContent)
			return
		}
		if ok {
			h.Set("Access-Control-Expose-Headers", "Content-Disposition, Content-Length")
		}
		c.Next()
	}
}

// stripUpstreamCORS drops ComfyUI's own CORS headers (--enable-cors-header
// sends "*"): comfyshim's policy is the one that applies.
func stripUpstreamCORS(res *http.Response) error {
	for k := range res.Header {
		if strings.HasPrefix(k, "Access-Control-") {
			res.Header.Del(k)
		}
	}
	return nil
}

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
			Name: "comfyshim_sidecar_write_duration_seconds", Help: "Durable writes of the tags file (write, fsync, rename, fsync folder).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		writeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "comfyshim_sidecar_write_failures_total", Help: "Writes of the tags file that failed.",
		}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.upstreamErrors, m.websockets, m.reloads, m.reloadFailures,
		m.writeDuration, m.writeFailures, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

func (m *metrics) handler() gin.HandlerFunc {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return func(c *gin.Context) { h.ServeHTTP(c.Writer, c.Request) }
}

// upstreamProbe checks that ComfyUI answers, remembering the result briefly
// so frequent probes do not load it.
type upstreamProbe struct {
	url    string
	client *http.Client

	mu      sync.Mutex
	checked time.Time
	err     error
}

func (p *upstreamProbe) check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.checked) < time.Second {
		return p.err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err == nil {
		var resp *http.Response
		if resp, err = p.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				err = fmt.Errorf("ComfyUI answered %s", resp.Status)
			}
		}
	}
	p.err, p.checked = err, time.Now()
	return err
}

const unprotectedWarning = "allow_unauthenticated: comfyshim listens on a non-loopback address with no API keys; anyone who can reach it controls ComfyUI"

func (s *Server) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

func (s *Server) readyz(c *gin.Context) {
	check := func(err error) gin.H {
		if err != nil {
			return gin.H{"ok": false, "error": err.Error()}
		}
		return gin.H{"ok": true}
	}
	upErr := s.probe.check(c.Request.Context())
	tagErr := s.lib.Err()
	keyErr := s.keys.Err()
	status, word := http.StatusOK, "ready"
	if upErr != nil || tagErr != nil || keyErr != nil {
		status, word = http.StatusServiceUnavailable, "not_ready"
	}
	body := gin.H{"status": word, "checks": gin.H{"upstream": check(upErr), "sidecar": check(tagErr), "api_keys": check(keyErr)}}
	if s.cfg.Unprotected() {
		s.log.Warn(unprotectedWarning, "listen", s.cfg.Listen)
		body["warnings"] = []string{unprotectedWarning}
	}
	c.JSON(status, body)
}
