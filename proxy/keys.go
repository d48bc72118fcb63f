package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patrickmn/go-cache"
)

// keyring holds the accepted API keys as SHA-256 digests, so comparing a
// presented key costs the same whatever its length or prefix.
//
// Authentication is on whenever keys were configured by any means; what a
// key file holds at the moment never turns it off. A key file that becomes
// empty, unreadable or deleted revokes its keys (only the keys given in the
// configuration itself remain) until it is valid again.
type keyring struct {
	static   []keyEntry
	file     string
	required bool
	log      *slog.Logger
	sessions *sessions

	set     atomic.Pointer[keySet]
	mu      sync.Mutex // serialises reloads
	fileSig string     // size and mtime of the key file as last read
}

type keySet struct {
	entries []keyEntry
	fileErr error // why the key file's keys are not in force, or nil
}

// keyEntry is one accepted key.
type keyEntry struct {
	digest [32]byte // SHA-256 of the key
	fp     [16]byte // names the key in session cookies
	user   string   // ComfyUI user the key acts as (comfy-user), or "" for any
}

// parseKeyLine reads "key" or "user:key" (user: letters, digits, . _ @ -;
// a leading ":" keeps a key that contains ':' unbound).
func parseKeyLine(line string) (user, key string) {
	if rest, ok := strings.CutPrefix(line, ":"); ok {
		return "", rest
	}
	if u, k, ok := strings.Cut(line, ":"); ok && validUser(u) && k != "" {
		return u, k
	}
	return "", line
}

func validUser(u string) bool {
	if len(u) == 0 || len(u) > 64 {
		return false
	}
	for _, r := range u {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@-", r)) {
			return false
		}
	}
	return true
}

func (k *keyring) entry(line string) keyEntry {
	user, key := parseKeyLine(line)
	d := sha256.Sum256([]byte(key))
	return keyEntry{digest: d, fp: k.sessions.fingerprint(d), user: user}
}

func newKeyring(static []string, file string, log *slog.Logger, ss *sessions) (*keyring, error) {
	k := &keyring{file: file, required: len(static) > 0 || file != "", log: log, sessions: ss}
	for _, s := range static {
		k.static = append(k.static, k.entry(s))
	}
	k.set.Store(&keySet{entries: k.static})
	if err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// errNoKeys is a key file that holds no key: a rotation caught half-way or
// a mistake, never "open to everyone".
var errNoKeys = errors.New("holds no keys")

// readKeyFile returns the keys in a key file: one per line ("key" or
// "user:key"), blank lines and # comments ignored.
func (k *keyring) readKeyFile(path string) ([]keyEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []keyEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, k.entry(line))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errNoKeys
	}
	return keys, nil
}

// reload re-reads the key file if it changed. Any problem with it drops its
// keys and is returned; the next good read restores them.
func (k *keyring) reload() error {
	if k.file == "" {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	sig := "missing"
	if fi, err := os.Stat(k.file); err == nil {
		sig = fmt.Sprint(fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
	}
	if sig == k.fileSig {
		return k.set.Load().fileErr
	}
	k.fileSig = sig
	keys, err := k.readKeyFile(k.file)
	if err != nil {
		err = fmt.Errorf("api_keys_file %s: %w", k.file, err)
		k.set.Store(&keySet{entries: k.static, fileErr: err})
		return err
	}
	all := append(append([]keyEntry{}, k.static...), keys...)
	wasBad := k.set.Load().fileErr != nil
	k.set.Store(&keySet{entries: all})
	if wasBad {
		k.log.Info("API key file valid again", "keys", len(keys))
	}
	return nil
}

// watch re-reads the key file every interval until stop is closed.
func (k *keyring) watch(interval time.Duration, stop <-chan struct{}) {
	if k.file == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		select {
		case <-t.C:
			err := k.reload()
			if err != nil && (last == nil || err.Error() != last.Error()) {
				k.log.Error("API key file unusable: its keys are refused until it is fixed", "err", err)
			}
			last = err
		case <-stop:
			return
		}
	}
}

// Err is why the key file's keys are not in force, for /readyz.
func (k *keyring) Err() error { return k.set.Load().fileErr }

// matchDigest finds the key whose SHA-256 digest is d, comparing in
// constant time against every key whatever matches.
func (k *keyring) matchDigest(d [32]byte) (keyEntry, bool) {
	return k.find(func(e *keyEntry) int { return subtle.ConstantTimeCompare(d[:], e.digest[:]) })
}

// bySession finds the key a session cookie was made from, if it is still
// accepted.
func (k *keyring) bySession(fp [16]byte) (keyEntry, bool) {
	return k.find(func(e *keyEntry) int { return subtle.ConstantTimeCompare(fp[:], e.fp[:]) })
}

func (k *keyring) find(eq func(*keyEntry) int) (keyEntry, bool) {
	var found keyEntry
	ok := 0
	set := k.set.Load()
	for i := range set.entries {
		e := &set.entries[i]
		hit := eq(e)
		if hit == 1 && ok == 0 {
			found = *e
		}
		ok |= hit
	}
	return found, ok == 1
}

// failureLimiter slows guessing: after max failed authentications from one
// address within window, that address's further credential checks are
// paced (see enter). Other addresses are not affected. The records live in
// a go-cache that expires each a window after its first failure.
type failureLimiter struct {
	max    int
	window time.Duration
	pace   time.Duration // hold after each failure while blocked: window/max

	mu   sync.Mutex   // guards the records' fields and their creation
	byIP *cache.Cache // address -> *failures
	good *cache.Cache // address + key digest -> seen valid from it lately
}

type failures struct {
	count int
	line  *checkLine // while blocked
}

// checkLine queues one blocked address's credential checks.
type checkLine struct {
	turn    chan struct{} // capacity 1: the check in progress
	mu      sync.Mutex
	waiting int
}

// maxWaiting bounds the requests one blocked address may have queued.
const maxWaiting = 32

func (q *checkLine) join() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiting >= maxWaiting {
		return false
	}
	q.waiting++
	return true
}

func (q *checkLine) leave() {
	q.mu.Lock()
	q.waiting--
	q.mu.Unlock()
}

// maxTracked bounds the limiter's table under a spray of addresses.
const maxTracked = 100_000

func newFailureLimiter(max int, window time.Duration) *failureLimiter {
	return &failureLimiter{max: max, window: window, pace: window / time.Duration(max),
		byIP: cache.New(window, window), good: cache.New(goodFor, goodFor)}
}

// goodFor is how long a key seen valid from an address lets it skip the
// line once the address is blocked (a person behind the same NAT as a
// guesser keeps working).
const goodFor = time.Hour

func goodKey(ip string, d [32]byte) string { return ip + "\x00" + string(d[:]) }

// remember notes that a valid key came from ip.
func (l *failureLimiter) remember(ip string, d [32]byte) {
	k := goodKey(ip, d)
	if _, ok := l.good.Get(k); ok || l.good.ItemCount() >= maxTracked {
		return
	}
	l.good.SetDefault(k, struct{}{})
}

// known reports whether one of the digests was seen valid from ip lately.
func (l *failureLimiter) known(ip string, digests [][32]byte) bool {
	for _, d := range digests {
		if _, ok := l.good.Get(goodKey(ip, d)); ok {
			return true
		}
	}
	return false
}

// lineFor returns ip's check line while it is blocked, else nil.
func (l *failureLimiter) lineFor(ip string) *checkLine {
	v, ok := l.byIP.Get(ip)
	if !ok {
		return nil
	}
	f := v.(*failures)
	l.mu.Lock()
	defer l.mu.Unlock()
	if f.count < l.max {
		return nil
	}
	if f.line == nil {
		f.line = &checkLine{turn: make(chan struct{}, 1)}
	}
	return f.line
}

// fail counts a failed authentication; the max-th in a window blocks ip.
func (l *failureLimiter) fail(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.byIP.Get(ip)
	if !ok {
		if l.byIP.ItemCount() >= maxTracked {
			l.byIP.DeleteExpired()
			if l.byIP.ItemCount() >= maxTracked {
				return // full of live records: this address goes untracked
			}
		}
		v = &failures{}
		l.byIP.Set(ip, v, cache.DefaultExpiration) // the window starts now
	}
	v.(*failures).count++
}
