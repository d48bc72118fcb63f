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
)

// keyring holds the accepted API keys as SHA-256 digests, so comparing a
// presented key costs the same whatever its length or prefix.
//
// Authentication is on whenever keys were configured by any means; what a
// key file holds at the moment never turns it off. A key file that becomes
// empty, unreadable or deleted revokes its keys (only the keys given in the
// configuration itself remain) until it is valid again.
type keyring struct {
	static   [][32]byte
	file     string
	required bool
	log      *slog.Logger

	set     atomic.Pointer[keySet]
	mu      sync.Mutex // serialises reloads
	fileSig string     // size and mtime of the key file as last read
}

type keySet struct {
	digests [][32]byte
	fileErr error // why the key file's keys are not in force, or nil
}

func newKeyring(static []string, file string, log *slog.Logger) (*keyring, error) {
	k := &keyring{file: file, required: len(static) > 0 || file != "", log: log}
	for _, s := range static {
		k.static = append(k.static, sha256.Sum256([]byte(s)))
	}
	k.set.Store(&keySet{digests: k.static})
	if err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// errNoKeys is a key file that holds no key: a rotation caught half-way or
// a mistake, never "open to everyone".
var errNoKeys = errors.New("holds no keys")

// readKeyFile returns the digests of the keys in a key file: one per line,
// blank lines and # comments ignored.
func readKeyFile(path string) ([][32]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys [][32]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, sha256.Sum256([]byte(line)))
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
	keys, err := readKeyFile(k.file)
	if err != nil {
		err = fmt.Errorf("api_keys_file %s: %w", k.file, err)
		k.set.Store(&keySet{digests: k.static, fileErr: err})
		return err
	}
	all := append(append([][32]byte{}, k.static...), keys...)
	wasBad := k.set.Load().fileErr != nil
	k.set.Store(&keySet{digests: all})
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

// valid compares in constant time against every key.
func (k *keyring) valid(presented string) bool {
	if presented == "" {
		return false
	}
	d := sha256.Sum256([]byte(presented))
	ok := 0
	for _, key := range k.set.Load().digests {
		ok |= subtle.ConstantTimeCompare(d[:], key[:])
	}
	return ok == 1
}

// failureLimiter slows guessing: after max failed authentications from one
// address within window, that address's further credential checks are
// paced (see enter). Other addresses are not affected.
type failureLimiter struct {
	max    int
	window time.Duration
	pace   time.Duration // hold after each failure while blocked: window/max

	mu   sync.Mutex
	byIP map[string]*failures
}

type failures struct {
	count int
	start time.Time
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
	return &failureLimiter{max: max, window: window, pace: window / time.Duration(max), byIP: map[string]*failures{}}
}

// lineFor returns ip's check line while it is blocked, else nil.
func (l *failureLimiter) lineFor(ip string, now time.Time) *checkLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.byIP[ip]
	if !ok {
		return nil
	}
	if now.Sub(f.start) > l.window && (f.line == nil || f.line.idle()) {
		delete(l.byIP, ip)
		return nil
	}
	if f.count < l.max {
		return nil
	}
	if f.line == nil {
		f.line = &checkLine{turn: make(chan struct{}, 1)}
	}
	return f.line
}

func (q *checkLine) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiting == 0
}

// fail counts a failed authentication and reports whether ip is now blocked.
func (l *failureLimiter) fail(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.byIP[ip]
	if !ok || (now.Sub(f.start) > l.window && f.line == nil) {
		if len(l.byIP) >= maxTracked {
			for k, v := range l.byIP {
				if now.Sub(v.start) > l.window && v.line == nil {
					delete(l.byIP, k)
				}
			}
			if len(l.byIP) >= maxTracked {
				// Still full of live entries: forget one rather than grow
				// without bound.
				for k, v := range l.byIP {
					if v.line == nil {
						delete(l.byIP, k)
						break
					}
				}
			}
		}
		f = &failures{start: now}
		l.byIP[ip] = f
	} else if now.Sub(f.start) > l.window {
		// A blocked address whose window ran out starts a new one, keeping
		// its line so queued checks stay in order.
		f.count, f.start = 0, now
	}
	f.count++
	return f.count >= l.max
}
