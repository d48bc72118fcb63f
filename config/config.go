// Package config loads comfyshim's settings from built-in defaults, a YAML
// file, COMFYSHIM_* environment variables and command-line flags, in that
// order of increasing precedence.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the effective configuration. Zero values are never used: Load
// starts from Default and every setting is validated before it is returned.
type Config struct {
	Listen   string   // address comfyshim listens on, host:port
	Upstream *url.URL // the ComfyUI server requests are forwarded to

	ComfyUIDir string // ComfyUI's base folder; empty disables local assets
	InputDir   string // defaults to <comfyui_dir>/input
	OutputDir  string // defaults to <comfyui_dir>/output
	ModelsDir  string // defaults to <comfyui_dir>/models
	TempDir    string // defaults to <comfyui_dir>/temp
	TagsFile   string // the JSON sidecar holding asset tags

	// AllowedOrigins are browser origins (scheme://host[:port]) accepted in
	// addition to same-origin requests.
	AllowedOrigins []string
	// AllowedHosts are Host names accepted besides IP literals, localhost and
	// the listen address's host; "*" accepts any (no DNS-rebinding defence).
	AllowedHosts []string
	// TrustedProxies are the peers (CIDRs) whose X-Forwarded-For and
	// X-Forwarded-Proto are believed. None by default.
	TrustedProxies []netip.Prefix
	// AllowUnauthenticated lets comfyshim listen on a non-loopback address
	// with no API keys configured.
	AllowUnauthenticated bool

	// APIKeys, when any are set (here or in APIKeysFile), are required on
	// every route but the health checks.
	APIKeys     []string
	APIKeysFile string // one key per line; re-read when it changes
	// SessionLifetime is how long a browser sign-in lasts.
	SessionLifetime time.Duration

	// ViewRedirect decides when /api/view answers with a redirect to a
	// signed URL, as Cloud does: "auto" (requests authenticated by the
	// X-API-Key header, the Cloud scheme), "always" (every authenticated
	// request but browser pages' own) or "never".
	ViewRedirect string
	// ViewURLLifetime is how long a signed /api/view URL stays valid.
	ViewURLLifetime time.Duration
	// HashRateMB bounds the background hashing's reads in MB/s (0: none),
	// so it does not compete with ComfyUI loading a model.
	HashRateMB int64
	// AdvertiseAssets tells the web app comfyshim serves the asset API
	// ("assets": true in /features and the websocket's feature_flags).
	AdvertiseAssets bool
	// HashFiles names which assets' files are hashed (BLAKE3) in the
	// background for lookups by hash: "none", "models" or "all". Uploads
	// are hashed as they stream in, whatever this says.
	HashFiles string
	// AbsolutePreviewURLs makes assets' preview_url absolute (the Cloud
	// spec's form); relative by default, as OSS ComfyUI's web app uses it.
	AbsolutePreviewURLs bool
	// WSPingInterval is how often an open websocket gets a ping, so proxies
	// and tunnels that cut idle sockets keep it; 0 disables pings.
	WSPingInterval time.Duration
	// JobRetention is how long a Comfy API v2 job's record (its status,
	// outputs and workflow) is kept after submission: its expires_at.
	JobRetention time.Duration
	// MaxQueueDepth refuses v2 submissions (429 queue_full) while ComfyUI
	// has this many prompts queued or running; 0: no limit.
	MaxQueueDepth int64
	// MaxEventStreams bounds the open v2 event streams (each costs about
	// 37 KiB of resident memory, measured in bench/); past it a new stream
	// gets 429 too_many_streams.
	MaxEventStreams int64
	// MaxEventStreamsPerKey bounds one key's (one owner's) open v2 event
	// streams, so one client cannot take them all (with keys configured).
	MaxEventStreamsPerKey int64

	MaxBodyBytes          int64         // bound on local JSON request bodies
	MaxUploadBytes        int64         // bound on a file uploaded to POST /api/assets
	MaxHeaderBytes        int           // bound on request headers
	ReadHeaderTimeout     time.Duration // time a client gets to send its headers
	ShutdownGrace         time.Duration // how long in-flight requests may run on shutdown
	UpstreamHeaderTimeout time.Duration // wait for upstream response headers
	LogLevel              string        // debug, info, warn, error

	CheckOnly bool // --check-config: print the effective configuration and exit
	Version   bool // --version: print the version and exit
}

// Default is the configuration used when nothing else is given: it works
// against a stock ComfyUI on its default port.
func Default() Config {
	u, _ := url.Parse("http://127.0.0.1:8188")
	return Config{
		Listen:                "127.0.0.1:8189",
		Upstream:              u,
		MaxBodyBytes:          1 << 20,
		MaxUploadBytes:        16 << 30,
		MaxHeaderBytes:        1 << 20,
		ReadHeaderTimeout:     10 * time.Second,
		ShutdownGrace:         10 * time.Second,
		UpstreamHeaderTimeout: 5 * time.Minute,
		SessionLifetime:       30 * 24 * time.Hour,
		ViewRedirect:          "auto",
		HashFiles:             "models",
		HashRateMB:            64,
		AdvertiseAssets:       true,
		ViewURLLifetime:       5 * time.Minute,
		WSPingInterval:        30 * time.Second,
		JobRetention:          7 * 24 * time.Hour,
		MaxEventStreams:       10000,
		MaxEventStreamsPerKey: 1000,
		LogLevel:              "info",
	}
}

// setting describes one configuration key and how it is spelled in each source.
type setting struct {
	key    string // YAML key
	flag   string // command-line flag
	usage  string
	list   bool // accepts a YAML sequence or a comma-separated string
	secret bool // masked in Effective
	set    func(c *Config, v string) error
	get    func(c *Config) string
}

// EnvName is the environment variable for a YAML key.
func EnvName(key string) string { return "COMFYSHIM_" + strings.ToUpper(key) }

var settings = []setting{
	{key: "listen", flag: "listen", usage: "address to listen on (host:port)",
		set: func(c *Config, v string) error { c.Listen = v; return nil },
		get: func(c *Config) string { return c.Listen }},
	{key: "upstream", flag: "upstream", usage: "URL of the ComfyUI server",
		set: func(c *Config, v string) error {
			u, err := parseUpstream(v)
			c.Upstream = u
			return err
		},
		get: func(c *Config) string { return c.Upstream.String() }},
	{key: "comfyui_dir", flag: "comfyui-dir", usage: "ComfyUI base folder (input/, output/, models/ under it)",
		set: func(c *Config, v string) error { c.ComfyUIDir = v; return nil },
		get: func(c *Config) string { return c.ComfyUIDir }},
	{key: "input_dir", flag: "input-dir", usage: "ComfyUI input folder (default <comfyui_dir>/input)",
		set: func(c *Config, v string) error { c.InputDir = v; return nil },
		get: func(c *Config) string { return c.InputDir }},
	{key: "output_dir", flag: "output-dir", usage: "ComfyUI output folder (default <comfyui_dir>/output)",
		set: func(c *Config, v string) error { c.OutputDir = v; return nil },
		get: func(c *Config) string { return c.OutputDir }},
	{key: "models_dir", flag: "models-dir", usage: "ComfyUI models folder (default <comfyui_dir>/models)",
		set: func(c *Config, v string) error { c.ModelsDir = v; return nil },
		get: func(c *Config) string { return c.ModelsDir }},
	{key: "temp_dir", flag: "temp-dir", usage: "ComfyUI temp folder, previews (default <comfyui_dir>/temp)",
		set: func(c *Config, v string) error { c.TempDir = v; return nil },
		get: func(c *Config) string { return c.TempDir }},
	{key: "tags_file", flag: "tags-file", usage: "JSON sidecar file holding asset tags",
		set: func(c *Config, v string) error { c.TagsFile = v; return nil },
		get: func(c *Config) string { return c.TagsFile }},
	{key: "allowed_origins", flag: "allowed-origins", list: true, usage: "comma-separated extra browser origins to accept",
		set: func(c *Config, v string) error {
			origins, err := parseOrigins(v)
			c.AllowedOrigins = origins
			return err
		},
		get: func(c *Config) string { return strings.Join(c.AllowedOrigins, ",") }},
	{key: "allowed_hosts", flag: "allowed-hosts", list: true, usage: "comma-separated Host names accepted besides IP literals, localhost and the listen host (\"*\": any)",
		set: func(c *Config, v string) error {
			hosts, err := parseHosts(v)
			c.AllowedHosts = hosts
			return err
		},
		get: func(c *Config) string { return strings.Join(c.AllowedHosts, ",") }},
	{key: "trusted_proxies", flag: "trusted-proxies", list: true, usage: "comma-separated CIDRs of reverse proxies whose X-Forwarded-For/-Proto are believed",
		set: func(c *Config, v string) error {
			nets, err := parseCIDRs(v)
			c.TrustedProxies = nets
			return err
		},
		get: func(c *Config) string {
			out := make([]string, len(c.TrustedProxies))
			for i, p := range c.TrustedProxies {
				out[i] = p.String()
			}
			return strings.Join(out, ",")
		}},
	{key: "allow_unauthenticated", flag: "allow-unauthenticated", usage: "allow a non-loopback listen address without API keys",
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			c.AllowUnauthenticated = b
			return nil
		},
		get: func(c *Config) string { return strconv.FormatBool(c.AllowUnauthenticated) }},
	{key: "api_keys", flag: "api-keys", list: true, secret: true, usage: "comma-separated API keys clients must send (none: no authentication)",
		set: func(c *Config, v string) error {
			c.APIKeys = nil
			for _, k := range strings.Split(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					c.APIKeys = append(c.APIKeys, k)
				}
			}
			return nil
		},
		get: func(c *Config) string { return strings.Join(c.APIKeys, ",") }},
	{key: "api_keys_file", flag: "api-keys-file", usage: "file of API keys, one per line, re-read when it changes",
		set: func(c *Config, v string) error { c.APIKeysFile = v; return nil },
		get: func(c *Config) string { return c.APIKeysFile }},
	{key: "session_lifetime", flag: "session-lifetime", usage: "how long a browser sign-in lasts (e.g. 720h)",
		set: func(c *Config, v string) error { return setDuration(&c.SessionLifetime, v) },
		get: func(c *Config) string { return c.SessionLifetime.String() }},
	{key: "view_redirect", flag: "view-redirect", usage: "when /api/view redirects to a signed URL: auto (X-API-Key requests), always, never",
		set: func(c *Config, v string) error {
			switch v {
			case "auto", "always", "never":
				c.ViewRedirect = v
				return nil
			}
			return fmt.Errorf("want auto, always or never, got %q", v)
		},
		get: func(c *Config) string { return c.ViewRedirect }},
	{key: "view_url_lifetime", flag: "view-url-lifetime", usage: "how long a signed /api/view URL stays valid (e.g. 5m)",
		set: func(c *Config, v string) error { return setDuration(&c.ViewURLLifetime, v) },
		get: func(c *Config) string { return c.ViewURLLifetime.String() }},
	{key: "advertise_assets", flag: "advertise-assets", usage: "tell the web app the asset API is on (assets: true in /features and feature_flags)",
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			c.AdvertiseAssets = b
			return nil
		},
		get: func(c *Config) string { return strconv.FormatBool(c.AdvertiseAssets) }},
	{key: "hash_files", flag: "hash-files", usage: "whose files are hashed in the background for lookups by hash: none, models, all",
		set: func(c *Config, v string) error {
			switch v {
			case "none", "models", "all":
				c.HashFiles = v
				return nil
			}
			return fmt.Errorf("want none, models or all, got %q", v)
		},
		get: func(c *Config) string { return c.HashFiles }},
	{key: "hash_rate_mb", flag: "hash-rate-mb", usage: "background hashing reads at most this many MB/s (0: no limit)",
		set: func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("want a non-negative integer, got %q", v)
			}
			c.HashRateMB = n
			return nil
		},
		get: func(c *Config) string { return strconv.FormatInt(c.HashRateMB, 10) }},
	{key: "absolute_preview_urls", flag: "absolute-preview-urls", usage: "make assets' preview_url absolute (scheme://host/...) instead of relative",
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			c.AbsolutePreviewURLs = b
			return nil
		},
		get: func(c *Config) string { return strconv.FormatBool(c.AbsolutePreviewURLs) }},
	{key: "ws_ping_interval", flag: "ws-ping-interval", usage: "how often open websockets get a ping (0 disables)",
		set: func(c *Config, v string) error {
			if v == "0" {
				c.WSPingInterval = 0
				return nil
			}
			return setDuration(&c.WSPingInterval, v)
		},
		get: func(c *Config) string { return c.WSPingInterval.String() }},
	{key: "job_retention", flag: "job-retention", usage: "how long a v2 job's record (status, outputs, workflow) is kept",
		set: func(c *Config, v string) error { return setDuration(&c.JobRetention, v) },
		get: func(c *Config) string { return c.JobRetention.String() }},
	{key: "max_queue_depth", flag: "max-queue-depth", usage: "v2 submissions get 429 queue_full while ComfyUI has this many prompts (0: no limit)",
		set: func(c *Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("want a non-negative integer, got %q", v)
			}
			c.MaxQueueDepth = n
			return nil
		},
		get: func(c *Config) string { return strconv.FormatInt(c.MaxQueueDepth, 10) }},
	{key: "max_event_streams", flag: "max-event-streams", usage: "most v2 event streams open at once",
		set: func(c *Config, v string) error { return setPositive(&c.MaxEventStreams, v) },
		get: func(c *Config) string { return strconv.FormatInt(c.MaxEventStreams, 10) }},
	{key: "max_event_streams_per_key", flag: "max-event-streams-per-key", usage: "most v2 event streams one key (owner) may have open",
		set: func(c *Config, v string) error { return setPositive(&c.MaxEventStreamsPerKey, v) },
		get: func(c *Config) string { return strconv.FormatInt(c.MaxEventStreamsPerKey, 10) }},
	{key: "max_body_bytes", flag: "max-body-bytes", usage: "largest accepted body for local JSON endpoints",
		set: func(c *Config, v string) error { return setPositive(&c.MaxBodyBytes, v) },
		get: func(c *Config) string { return strconv.FormatInt(c.MaxBodyBytes, 10) }},
	{key: "max_upload_bytes", flag: "max-upload-bytes", usage: "largest file accepted by POST /api/assets",
		set: func(c *Config, v string) error { return setPositive(&c.MaxUploadBytes, v) },
		get: func(c *Config) string { return strconv.FormatInt(c.MaxUploadBytes, 10) }},
	{key: "max_header_bytes", flag: "max-header-bytes", usage: "largest accepted request header block",
		set: func(c *Config, v string) error {
			var n int64
			err := setPositive(&n, v)
			c.MaxHeaderBytes = int(n)
			return err
		},
		get: func(c *Config) string { return strconv.Itoa(c.MaxHeaderBytes) }},
	{key: "read_header_timeout", flag: "read-header-timeout", usage: "time a client gets to send its request headers",
		set: func(c *Config, v string) error { return setDuration(&c.ReadHeaderTimeout, v) },
		get: func(c *Config) string { return c.ReadHeaderTimeout.String() }},
	{key: "shutdown_grace", flag: "shutdown-grace", usage: "time in-flight requests get on shutdown (e.g. 10s)",
		set: func(c *Config, v string) error { return setDuration(&c.ShutdownGrace, v) },
		get: func(c *Config) string { return c.ShutdownGrace.String() }},
	{key: "upstream_header_timeout", flag: "upstream-header-timeout", usage: "how long to wait for upstream response headers",
		set: func(c *Config, v string) error { return setDuration(&c.UpstreamHeaderTimeout, v) },
		get: func(c *Config) string { return c.UpstreamHeaderTimeout.String() }},
	{key: "log_level", flag: "log-level", usage: "debug, info, warn or error",
		set: func(c *Config, v string) error {
			switch v {
			case "debug", "info", "warn", "error":
				c.LogLevel = v
				return nil
			}
			return fmt.Errorf("want debug, info, warn or error, got %q", v)
		},
		get: func(c *Config) string { return c.LogLevel }},
}

// ErrHelp is returned by Load when -h or --help was given.
var ErrHelp = flag.ErrHelp

// Load builds the configuration from args (without the program name) and the
// environment looked up through getenv. Usage text goes to usageOut.
func Load(args []string, getenv func(string) string, usageOut io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("comfyshim", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	configFile := fs.String("config", getenv("COMFYSHIM_CONFIG"), "YAML configuration file")
	checkOnly := fs.Bool("check-config", false, "print the effective configuration and exit (non-zero on errors)")
	version := fs.Bool("version", false, "print the version and exit")
	flagVals := map[string]string{}
	for _, s := range settings {
		s := s
		fs.Func(s.flag, s.usage+" (env "+EnvName(s.key)+")", func(v string) error {
			flagVals[s.key] = v
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	c := Default()
	c.CheckOnly, c.Version = *checkOnly, *version
	if *configFile != "" {
		if err := c.applyFile(*configFile); err != nil {
			return nil, err
		}
	}
	for _, s := range settings {
		if v := getenv(EnvName(s.key)); v != "" {
			if err := s.set(&c, v); err != nil {
				return nil, fmt.Errorf("environment %s: %w", EnvName(s.key), err)
			}
		}
	}
	for _, s := range settings {
		if v, ok := flagVals[s.key]; ok {
			if err := s.set(&c, v); err != nil {
				return nil, fmt.Errorf("flag --%s: %w", s.flag, err)
			}
		}
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	return &c, nil
}

// applyFile reads a YAML mapping of keys to values. Unknown keys are errors:
// a misspelt key silently ignored is a setting the user thinks is in force.
func (c *Config) applyFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config file %s: line %d: want a mapping of keys to values", path, root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		s, ok := lookup(k.Value)
		if !ok {
			return fmt.Errorf("config file %s: line %d: unknown key %q", path, k.Line, k.Value)
		}
		var val string
		switch {
		case v.Kind == yaml.ScalarNode:
			val = v.Value
		case v.Kind == yaml.SequenceNode && s.list:
			items := make([]string, 0, len(v.Content))
			for _, it := range v.Content {
				if it.Kind != yaml.ScalarNode {
					return fmt.Errorf("config file %s: line %d: key %q: list items must be strings", path, it.Line, k.Value)
				}
				items = append(items, it.Value)
			}
			val = strings.Join(items, ",")
		default:
			return fmt.Errorf("config file %s: line %d: key %q: want a single value", path, v.Line, k.Value)
		}
		if err := s.set(c, val); err != nil {
			return fmt.Errorf("config file %s: line %d: key %q: %w", path, v.Line, k.Value, err)
		}
	}
	return nil
}

func lookup(key string) (setting, bool) {
	for _, s := range settings {
		if s.key == key {
			return s, true
		}
	}
	return setting{}, false
}

// finish validates cross-field rules and derives the defaults that depend on
// other settings.
func (c *Config) finish() error {
	if err := validateListen(c.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// ComfyUI has no authentication and every caller looks local to it
	// through comfyshim: never open it to a network by accident.
	if !c.KeysConfigured() && !IsLoopbackListen(c.Listen) && !c.AllowUnauthenticated {
		return fmt.Errorf("listen %s is reachable from other machines and no API keys are configured: set api_keys or api_keys_file, listen on 127.0.0.1, or set allow_unauthenticated: true", c.Listen)
	}
	if c.ComfyUIDir != "" {
		def := func(p *string, sub string) {
			if *p == "" {
				*p = filepath.Join(c.ComfyUIDir, sub)
			}
		}
		def(&c.InputDir, "input")
		def(&c.OutputDir, "output")
		def(&c.ModelsDir, "models")
		def(&c.TempDir, "temp")
		if c.TagsFile == "" {
			c.TagsFile = filepath.Join(c.ComfyUIDir, "user", "comfyshim-tags.json")
		}
	}
	if c.TagsFile == "" {
		c.TagsFile = "comfyshim-tags.json"
	}
	return nil
}

// SecretFile is where comfyshim keeps its server secret (it signs session
// cookies): beside the tags file.
func (c *Config) SecretFile() string {
	return filepath.Join(filepath.Dir(c.TagsFile), "comfyshim-secret")
}

// JobsDir is where comfyshim keeps Comfy API v2 job records, beside the
// tags file.
func (c *Config) JobsDir() string {
	return filepath.Join(filepath.Dir(c.TagsFile), "comfyshim-jobs")
}

// KeysConfigured reports whether authentication is on: keys were given by
// any means, whatever a key file holds at the moment.
func (c *Config) KeysConfigured() bool { return len(c.APIKeys) > 0 || c.APIKeysFile != "" }

// Unprotected reports the mode that allow_unauthenticated permits: open to
// the network with no keys.
func (c *Config) Unprotected() bool { return !c.KeysConfigured() && !IsLoopbackListen(c.Listen) }

// IsLoopbackListen reports whether a listen address only accepts connections
// from this machine. An empty host listens on every interface.
func IsLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Effective lists every key with its value, for --check-config style output.
func (c *Config) Effective() [][2]string {
	out := make([][2]string, 0, len(settings))
	for _, s := range settings {
		v := s.get(c)
		if s.secret && v != "" {
			v = fmt.Sprintf("**** (%d set)", len(strings.Split(v, ",")))
		}
		out = append(out, [2]string{s.key, v})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

func parseUpstream(v string) (*url.URL, error) {
	u, err := url.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("want an http:// or https:// URL, got %q", v)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("URL %q has no host", v)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("URL %q must not carry a query, fragment or credentials", v)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func parseOrigins(v string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(v, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("origin %q: want scheme://host[:port]", o)
		}
		out = append(out, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return out, nil
}

// parseHosts reads Host names: lower case, no port, no trailing dot.
func parseHosts(v string) ([]string, error) {
	var out []string
	for _, h := range strings.Split(v, ",") {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		if h == "" {
			continue
		}
		if h != "*" && (strings.ContainsAny(h, ":/ @") || strings.Contains(h, "*")) {
			return nil, fmt.Errorf("host %q: want a bare host name such as comfy.example.com (no scheme or port), or *", h)
		}
		out = append(out, h)
	}
	return out, nil
}

// parseCIDRs reads networks; a bare address is a network of one.
func parseCIDRs(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q: want a CIDR such as 10.0.0.0/8 or an IP address", s)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q: want a CIDR such as 10.0.0.0/8 or an IP address", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func validateListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port in %q", addr)
	}
	return nil
}

func setPositive(n *int64, v string) error {
	x, err := strconv.ParseInt(v, 10, 64)
	if err != nil || x <= 0 {
		return fmt.Errorf("want a positive integer, got %q", v)
	}
	*n = x
	return nil
}

func setDuration(d *time.Duration, v string) error {
	x, err := time.ParseDuration(v)
	if err != nil || x <= 0 {
		return errors.New("want a positive duration such as 10s, got " + strconv.Quote(v))
	}
	*d = x
	return nil
}
