// Package proxy is comfyshim's HTTP server: it serves the Cloud asset tag API
// itself and forwards every other route to ComfyUI unchanged.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/config"
	"github.com/comfyshim/comfyshim/proxy/apiv2"
	"github.com/comfyshim/comfyshim/proxy/assetapi"
	"github.com/comfyshim/comfyshim/proxy/jobs"
	"github.com/comfyshim/comfyshim/proxy/signedurl"
	"github.com/comfyshim/comfyshim/proxy/wsrelay"
	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// Server is comfyshim's HTTP front: a gin engine whose unmatched routes go to
// the forwarder.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	engine   *gin.Engine
	forward  *httputil.ReverseProxy
	lib      *assets.Library
	metrics  *metrics
	keys     *keyring
	sessions *sessions
	limiter  *failureLimiter
	trusted  trustedNets
	probe    *upstreamProbe
	hub      *wsrelay.Hub
	// upstreamClient asks ComfyUI things comfyshim answers for it.
	upstreamClient *http.Client
	uploads        chan [2]string // files to tag "uploaded": root, path inside
	registry       *jobs.Registry
	signer         *signedurl.Signer // nil without keys
	v2             *apiv2.API
	stop           chan struct{} // closed by Close

	mu       sync.Mutex
	closing  bool
	hijacked map[net.Conn]struct{} // open websockets, closed on shutdown
}

// Options carries what New needs beyond the configuration.
type Options struct {
	Logger *slog.Logger
	// Assets tunes the asset library's intervals (debounces, rescans).
	Assets assets.Options
	// KeyFileInterval is how often the API key file is re-read (2 s).
	KeyFileInterval time.Duration
	// FailureWindow is the failure limit's window (1 minute): 10 failed
	// authentications in it block an address, whose further checks are
	// then paced at window/10.
	FailureWindow time.Duration
}

// Context keys read by the access log.
const (
	kindKey     = "comfyshim.kind" // "local", "forwarded" or "websocket"
	upgradedKey = "comfyshim.upgraded"
)

// New builds the server; it does not listen yet.
func New(cfg *config.Config, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	gin.SetMode(gin.ReleaseMode)
	if opts.KeyFileInterval <= 0 {
		opts.KeyFileInterval = 2 * time.Second
	}
	if opts.FailureWindow <= 0 {
		opts.FailureWindow = time.Minute
	}
	e := gin.New()
	// A trailing slash or odd casing belongs to whoever owns the route:
	// unmatched paths are forwarded exactly as sent, never redirected.
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	// Client addresses in the log come from the connection, never from a
	// client-supplied X-Forwarded-For.
	_ = e.SetTrustedProxies(nil)

	m := newMetrics()
	ss := &sessions{lifetime: cfg.SessionLifetime}
	var signer *signedurl.Signer
	if cfg.KeysConfigured() {
		secret, err := loadSecret(cfg.SecretFile())
		if err != nil {
			return nil, err
		}
		ss.secret = secret
		signer = signedurl.New(secret)
	}
	keys, err := newKeyring(cfg.APIKeys, cfg.APIKeysFile, log, ss)
	if err != nil {
		return nil, err
	}
	ao := opts.Assets
	ao.Logger, ao.OnReload, ao.OnWrite, ao.OnCompact = log, m.sidecarReloaded, m.sidecarWritten, m.sidecarCompacted
	ao.HashRate = cfg.HashRateMB * 1_000_000
	switch cfg.HashFiles {
	case "models":
		ao.HashRoots = []string{"models"}
	case "all":
		ao.HashRoots = []string{"models", "input", "output", "temp"}
	}
	lib, err := assets.Open(assetRoots(cfg, log), cfg.TagsFile, ao)
	if err != nil {
		return nil, err
	}
	transport := newTransport(cfg.UpstreamHeaderTimeout)
	s := &Server{
		lib:            lib,
		cfg:            cfg,
		log:            log,
		engine:         e,
		forward:        newForwarder(cfg.Upstream, transport, log, m.upstreamErrors.Inc),
		metrics:        m,
		keys:           keys,
		sessions:       ss,
		limiter:        newFailureLimiter(10, opts.FailureWindow),
		trusted:        trustedNets(cfg.TrustedProxies),
		probe:          &upstreamProbe{url: cfg.Upstream.String() + "/system_stats", client: &http.Client{Transport: transport}},
		uploads:        make(chan [2]string, 1024),
		registry:       jobs.NewRegistry(50_000),
		upstreamClient: &http.Client{Transport: transport, Timeout: 30 * time.Second},
		signer:         signer,
		stop:           make(chan struct{}),
		hijacked:       map[net.Conn]struct{}{},
	}
	s.hub = wsrelay.NewHub(wsrelay.Options{
		Upstream: "ws" + strings.TrimPrefix(strings.TrimSuffix(cfg.Upstream.String(), "/"), "http") + "/ws",
		Ping:     cfg.WSPingInterval,
		Logger:   log,
		Executed: s.executedOutputs,
		Collected: func(binary bool, msg []byte) {
			if s.v2 != nil {
				s.v2.Observe(binary, msg)
			}
		},
	})
	go keys.watch(opts.KeyFileInterval, s.stop)
	go s.uploadedLoop()
	if cfg.Unprotected() {
		log.Warn(unprotectedWarning, "listen", cfg.Listen)
	}

	e.Use(s.identifyClient, s.accessLog, s.recovery, hostGuard(cfg.Listen, cfg.AllowedHosts),
		originGuard(cfg.AllowedOrigins), cors(cfg.AllowedOrigins), s.authenticate)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", m.handler())
	if keys.required {
		s.mountSignIn(e)
	}
	assetapi.Mount(e, lib, assetapi.Options{
		MaxBody:      cfg.MaxBodyBytes,
		Origin:       func(r *http.Request) string { return clientOf(r).scheme() + "://" + r.Host },
		AbsoluteURLs: cfg.AbsolutePreviewURLs,
		MaxUpload:    cfg.MaxUploadBytes,
		Resolve:      newOSSResolver(cfg.Upstream.String(), s.upstreamClient).resolve,
		Events: func(typ string, data map[string]any) {
			msg, _ := json.Marshal(map[string]any{"type": typ, "data": data})
			s.hub.Broadcast(msg)
		},
	})
	m.registerAssetGauges(lib)
	m.registerRelayCounter(s.hub.Dropped)
	jobs.Mount(e, jobs.Options{
		Upstream:  cfg.Upstream,
		Transport: transport,
		Registry:  s.registry,
		MaxBody:   cfg.MaxBodyBytes,
		UserID:    userID,
	})
	v2, err := apiv2.New(apiv2.Options{
		Upstream:   cfg.Upstream,
		Transport:  transport,
		Library:    lib,
		Registry:   s.registry,
		Dir:        cfg.JobsDir(),
		Logger:     log,
		Retention:  cfg.JobRetention,
		MaxQueue:   int(cfg.MaxQueueDepth),
		MaxStreams: int(cfg.MaxEventStreams),
		// Without keys everyone is one owner: the global limit is theirs.
		MaxStreamsPerOwner: map[bool]int{true: int(cfg.MaxEventStreamsPerKey), false: 0}[cfg.KeysConfigured()],
		MaxUpload:          cfg.MaxUploadBytes,
		URLLifetime:        cfg.ViewURLLifetime,
		Origin:             func(r *http.Request) string { return clientOf(r).scheme() + "://" + r.Host },
		Owner:              func(r *http.Request) string { return callerOf(r).owner },
		ClientID:           s.hub.ClientID,
		Sign:               s.signContent,
	})
	if err != nil {
		s.hub.Close()
		_ = lib.Close()
		return nil, err
	}
	s.v2 = v2
	v2.Mount(e)
	e.POST("/prompt", s.submitPrompt)
	e.POST("/api/prompt", s.submitPrompt)
	e.GET("/api/view", s.view)
	for _, p := range []string{"/upload/image", "/upload/mask", "/api/upload/image", "/api/upload/mask"} {
		e.POST(p, s.forwardUpload)
	}
	e.GET("/features", s.features)
	e.GET("/api/features", s.features)
	e.NoRoute(s.forwardHandler)
	return s, nil
}

// Check reports every problem that would stop New or the listener from
// starting with cfg, without starting anything (--check-config).
func Check(cfg *config.Config) []error {
	var errs []error
	if _, err := newKeyring(cfg.APIKeys, cfg.APIKeysFile, slog.New(slog.DiscardHandler), &sessions{secret: []byte("check")}); err != nil {
		errs = append(errs, err)
	}
	if err := assets.CheckTagsFile(cfg.TagsFile); err != nil {
		errs = append(errs, err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("listen %s: %w", cfg.Listen, err))
	} else {
		_ = ln.Close()
	}
	return errs
}

// Close releases what New opened. Serve must have returned.
func (s *Server) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	s.hub.Close()
	s.v2.Close()
	return s.lib.Close()
}

// assetRoots are the ComfyUI folders whose files are assets, with the model
// folders ComfyUI's extra_model_paths.yaml adds.
func assetRoots(cfg *config.Config, log *slog.Logger) []assets.Root {
	var roots []assets.Root
	for _, r := range []assets.Root{{Name: "input", Dir: cfg.InputDir}, {Name: "output", Dir: cfg.OutputDir}, {Name: "models", Dir: cfg.ModelsDir}, {Name: "temp", Dir: cfg.TempDir}} {
		if r.Dir != "" {
			roots = append(roots, r)
		}
	}
	if cfg.ComfyUIDir != "" {
		extra, err := assets.ExtraModelPaths(filepath.Join(cfg.ComfyUIDir, "extra_model_paths.yaml"))
		if err != nil {
			log.Warn("extra_model_paths.yaml not used", "err", err)
		}
		roots = append(roots, extra...)
	}
	return roots
}

// Handler returns the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.engine }

func (s *Server) forwardHandler(c *gin.Context) {
	if assetapi.Owns(c.Request.URL.Path) || jobs.Owns(c.Request.Method, c.Request.URL.Path) || apiv2.Owns(c.Request.URL.Path) {
		// The asset API is comfyshim's: an unknown route or method there is
		// answered here, never passed to ComfyUI.
		apiError(c, http.StatusNotFound, "NOT_FOUND", "no route "+c.Request.Method+" "+c.Request.URL.Path)
		return
	}
	kind := "forwarded"
	tw := &trackingWriter{ResponseWriter: c.Writer, s: s}
	if isUpgrade(c.Request) {
		kind = "websocket"
		if strings.HasPrefix(c.Request.URL.Query().Get("clientId"), reservedClientID) {
			apiError(c, http.StatusBadRequest, "RESERVED_CLIENT_ID", "clientIds starting with "+reservedClientID+" are comfyshim's own")
			return
		}
		s.prepareWebsocket(c.Request, tw)
	}
	c.Set(kindKey, kind)
	// gin presets 404 for unmatched routes; the forwarder's WriteHeader
	// replaces it with ComfyUI's status.
	if b := c.Request.Body; b != nil && b != http.NoBody {
		cb := &clientBody{ReadCloser: b}
		c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), clientBodyKey{}, cb))
		c.Request.Body = cb
	}
	s.forward.ServeHTTP(tw, c.Request)
	// A response with an empty body (ComfyUI's 404s) never calls Write, and
	// gin, seeing nothing written, would append its own "404 page not
	// found" past the Content-Length: 0 already sent, garbling the
	// connection for the client's next request. Commit the header now.
	if tw.conn == nil {
		c.Writer.WriteHeaderNow()
	}
	if tw.conn != nil {
		s.untrack(tw.conn)
		c.Set(upgradedKey, true)
	}
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

// Serve accepts connections on ln until ctx is cancelled, then shuts down:
// it stops accepting, closes websockets, and gives in-flight requests up to
// the configured grace period before closing what remains.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: s.engine,
		// No ReadTimeout or WriteTimeout: they would cut websockets and long
		// /view streams. Only the request headers are time-bounded.
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "grace", s.cfg.ShutdownGrace.String())
	s.closeHijacked()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		s.log.Warn("grace period over; closing remaining connections", "err", err)
		_ = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return nil
}
