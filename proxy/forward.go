package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// newForwarder builds the reverse proxy that carries every route comfyshim
// does not serve itself to ComfyUI, byte for byte.
func newForwarder(upstream *url.URL, transport http.RoundTripper, log *slog.Logger, onError func()) *httputil.ReverseProxy {
	upstreamOrigin := upstream.Scheme + "://" + upstream.Host
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// SetURL joins the raw (escaped) paths, so /api/userdata/a%2Fb.json
			// reaches ComfyUI with its encoded slash intact.
			pr.SetURL(upstream)
			// ReverseProxy drops query parameters Go cannot parse (those with
			// ';'); ComfyUI gets the query exactly as the client sent it.
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			setForwarded(pr)
			// The origin middleware has already applied ComfyUI's same-origin
			// rule to the client's Origin; ComfyUI sees its own Host, so it is
			// given its own origin to compare against.
			if pr.Out.Header.Get("Origin") != "" {
				pr.Out.Header.Set("Origin", upstreamOrigin)
			}
			if strings.EqualFold(pr.Out.Header.Get("Sec-Fetch-Site"), "cross-site") {
				pr.Out.Header.Del("Sec-Fetch-Site") // allowed by allowed_origins
			}
		},
		Transport:      transport,
		ModifyResponse: stripUpstreamCORS,
		// 0: responses of unknown length and text/event-stream are still
		// flushed on every write (a /view stream, progress events); others
		// are not flushed per write. -1 would start a flush goroutine per
		// response and write headers separately, which cost about a fifth
		// of small-request throughput when measured, for no gain.
		FlushInterval: 0,
		BufferPool:    bufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				// The client went away; its request to ComfyUI was cancelled.
				w.WriteHeader(499)
				return
			}
			if cb, ok := r.Context().Value(clientBodyKey{}).(*clientBody); ok && cb.err != nil {
				// The client's own body was malformed or cut short: its
				// fault, not ComfyUI's.
				writeError(w, http.StatusBadRequest, "INVALID_BODY", "reading the request body failed: "+cb.err.Error())
				return
			}
			onError()
			log.Warn("upstream error", "method", r.Method, "path", r.URL.Path, "err", err)
			writeError(w, http.StatusBadGateway, "UPSTREAM_UNAVAILABLE", "ComfyUI upstream is unavailable: "+upstreamErrorText(err))
		},
	}
}

// setForwarded sets X-Forwarded-For, -Proto and -Host. Behind a trusted
// proxy the chain it sent is extended; anyone else's is replaced, since a
// client could write anything there.
func setForwarded(pr *httputil.ProxyRequest) {
	ci := clientOf(pr.In)
	if !ci.trusted {
		pr.SetXForwarded()
		return
	}
	chain := strings.Join(pr.In.Header.Values("X-Forwarded-For"), ", ")
	if chain != "" {
		chain += ", "
	}
	pr.Out.Header.Set("X-Forwarded-For", chain+ci.peer)
	pr.Out.Header.Set("X-Forwarded-Proto", ci.scheme())
	host := pr.In.Header.Get("X-Forwarded-Host")
	if host == "" {
		host = pr.In.Host
	}
	pr.Out.Header.Set("X-Forwarded-Host", host)
}

// clientBody remembers why reading a request body failed, so a malformed
// upload is told apart from an unreachable upstream.
type clientBody struct {
	io.ReadCloser
	err error
}

// clientBodyKey finds the request's clientBody from the error hook, which
// sees the body only behind ReverseProxy's own wrapper.
type clientBodyKey struct{}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// newTransport is sized for a proxy talking to one host: the default
// transport keeps only two idle connections per host, so under load it would
// open and close upstream connections for most requests.
func newTransport(headerTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy: nil, // the upstream is named explicitly; HTTP_PROXY must not reroute it
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: headerTimeout,
		ExpectContinueTimeout: time.Second,
		// Pass Accept-Encoding and compressed bodies through untouched.
		DisableCompression: true,
		WriteBufferSize:    64 << 10,
		ReadBufferSize:     64 << 10,
	}
}

func upstreamErrorText(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return "connection refused or unreachable"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

// bufferPool reuses the 32 KiB copy buffers of streamed bodies.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
