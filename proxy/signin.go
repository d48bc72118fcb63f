package proxy

import (
	"crypto/sha256"
	"errors"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// Browser sign-in: a page where a person pastes a key once and gets a
// session cookie, so the ComfyUI web app (its scripts, fetches, images and
// websocket, none of which carry a key) works with keys on.

const (
	signInPath  = "/signin"
	signOutPath = "/signout"
)

func isSignInRoute(r *http.Request) bool {
	return r.URL.Path == signInPath || r.URL.Path == signOutPath
}

func (s *Server) mountSignIn(e *gin.Engine) {
	e.GET(signInPath, func(c *gin.Context) {
		s.signInPage(c, http.StatusOK, c.Query("next"), "")
	})
	e.POST(signInPath, s.signInForm)
	e.GET(signOutPath, func(c *gin.Context) { s.page(c, http.StatusOK, pageData{SignOut: true}) })
	e.POST(signOutPath, func(c *gin.Context) {
		http.SetCookie(c.Writer, s.sessions.cookie("", clientOf(c.Request).https))
		c.Redirect(http.StatusSeeOther, signInPath)
	})
}

// signInForm checks a key pasted into the page. A wrong key counts towards
// the failure limit like any other.
func (s *Server) signInForm(c *gin.Context) {
	r := c.Request
	r.Body = http.MaxBytesReader(c.Writer, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.page(c, http.StatusRequestEntityTooLarge, pageData{Error: "That was too long to be a key."})
			return
		}
		s.page(c, http.StatusBadRequest, pageData{Error: "The form could not be read."})
		return
	}
	next := r.PostForm.Get("next")
	key := strings.TrimSpace(r.PostForm.Get("key"))
	if key == "" {
		s.signInPage(c, http.StatusUnauthorized, next, "Paste an API key.")
		return
	}
	ip := clientOf(r).ip
	digest := sha256.Sum256([]byte(key))
	release, ok := s.limiter.enter(r.Context(), ip, [][32]byte{digest})
	if !ok {
		c.Header("Retry-After", "60")
		s.signInPage(c, http.StatusTooManyRequests, next, "Too many wrong keys from this address. Wait a minute and try again.")
		return
	}
	e, valid := s.keys.matchDigest(digest)
	if !valid {
		if release(true) {
			c.Header("Retry-After", "60")
			s.signInPage(c, http.StatusTooManyRequests, next, "Too many wrong keys from this address. Wait a minute and try again.")
			return
		}
		s.signInPage(c, http.StatusUnauthorized, next, "That key is not valid.")
		return
	}
	release(false)
	s.limiter.remember(ip, digest)
	s.signIn(c, e, next)
}

// signIn sets the session cookie for key e and sends the browser on to
// next (a local path; anything else goes to /), without any token in it.
func (s *Server) signIn(c *gin.Context, e keyEntry, next string) {
	http.SetCookie(c.Writer, s.sessions.cookie(s.sessions.issue(e.fp, time.Now()), clientOf(c.Request).https))
	c.Header("Cache-Control", "no-store")
	c.Header("Referrer-Policy", "no-referrer")
	c.Redirect(http.StatusSeeOther, localTarget(next))
	c.Abort()
}

// localTarget keeps a post-sign-in redirect on this server and drops any
// token from it.
func localTarget(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	path, query, hasQuery := strings.Cut(next, "?")
	if hasQuery {
		query, _ = stripQueryParam(query, "token")
		if query != "" {
			return path + "?" + query
		}
	}
	return path
}

func (s *Server) signInPage(c *gin.Context, status int, next, errMsg string) {
	s.page(c, status, pageData{Next: localTarget(next), Error: errMsg})
}

type pageData struct {
	Next    string
	Error   string
	SignOut bool
}

func (s *Server) page(c *gin.Context, status int, d pageData) {
	h := c.Writer.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	c.Status(status)
	_ = signInTemplate.Execute(c.Writer, d)
	c.Abort()
}

// signInTemplate is the whole page: no scripts, no external assets.
var signInTemplate = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{if .SignOut}}Sign out{{else}}Sign in{{end}} · ComfyUI</title>
<style>
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:#202020;color:#ddd;font:16px/1.4 system-ui,sans-serif}
form{background:#2b2b2b;padding:2em;border-radius:8px;width:min(22em,90vw);box-shadow:0 2px 12px #0008}
h1{font-size:1.3em;margin:0 0 1em}
label{display:block;margin-bottom:.4em}
input[type=password]{box-sizing:border-box;width:100%;padding:.6em;border:1px solid #555;border-radius:4px;background:#1a1a1a;color:#eee;font:inherit}
button{margin-top:1em;width:100%;padding:.6em;border:0;border-radius:4px;background:#3b82f6;color:#fff;font:inherit;cursor:pointer}
.error{color:#f87171;margin:0 0 1em}
p.note{font-size:.85em;color:#999;margin:1em 0 0}
</style></head><body>
{{if .SignOut}}<form method="post" action="/signout">
<h1>Sign out of ComfyUI</h1>
<button type="submit">Sign out</button>
</form>{{else}}<form method="post" action="/signin">
<h1>Sign in to ComfyUI</h1>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<label for="key">API key</label>
<input type="password" id="key" name="key" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{{.Next}}">
<button type="submit">Sign in</button>
<p class="note">This browser stays signed in until you sign out at /signout.</p>
</form>{{end}}
</body></html>
`))
