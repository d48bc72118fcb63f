package assets

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"lukechampine.com/blake3"

	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// The BLAKE3 hashes of asset files, for lookups by hash. They are derived
// data: computed in the background, one file at a time (at most one core),
// never on a request path, and cached by size and modification time in a
// file of their own beside the tags file (<tags file>.hashes), so the
// hand-edited tags file does not fill with an entry per asset. Losing the
// cache costs a rehash, nothing else.
type hashIndex struct {
	path string

	mu     sync.Mutex
	byID   map[string]hashed
	byHash map[string]map[string]bool // hash -> ids
	dirty  bool
	wake   chan struct{}
}

type hashed struct {
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime_ns"`
	Hash  string `json:"blake3"`
}

type hashFile struct {
	Version int               `json:"version"`
	Files   map[string]hashed `json:"files"`
}

func openHashes(tagsFile string) *hashIndex {
	h := &hashIndex{path: tagsFile + ".hashes", byID: map[string]hashed{}, byHash: map[string]map[string]bool{}, wake: make(chan struct{}, 1)}
	if data, err := os.ReadFile(h.path); err == nil {
		var f hashFile
		if json.Unmarshal(data, &f) == nil && f.Version == 1 {
			for id, e := range f.Files {
				if strings.HasPrefix(e.Hash, "blake3:") && len(e.Hash) == 7+64 {
					h.setLocked(id, e)
				}
			}
		}
	}
	return h
}

func (h *hashIndex) setLocked(id string, e hashed) {
	if old, ok := h.byID[id]; ok {
		delete(h.byHash[old.Hash], id)
		if len(h.byHash[old.Hash]) == 0 {
			delete(h.byHash, old.Hash)
		}
	}
	h.byID[id] = e
	if h.byHash[e.Hash] == nil {
		h.byHash[e.Hash] = map[string]bool{}
	}
	h.byHash[e.Hash][id] = true
	h.dirty = true
}

// current returns a file's hash if the cache holds one for its present
// size and modification time.
func (h *hashIndex) current(f *catalog.File) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.byID[f.ID]
	if !ok || e.Size != f.Size || e.MTime != f.ModifiedNS {
		return "", false
	}
	return e.Hash, true
}

func (h *hashIndex) set(f *catalog.File, hash string) {
	h.mu.Lock()
	h.setLocked(f.ID, hashed{Size: f.Size, MTime: f.ModifiedNS, Hash: hash})
	h.mu.Unlock()
}

// ids returns the assets last seen with hash.
func (h *hashIndex) ids(hash string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.byHash[hash]))
	for id := range h.byHash[hash] {
		out = append(out, id)
	}
	return out
}

// save writes the cache if it changed, dropping files no longer listed.
func (h *hashIndex) save(snap *catalog.Snapshot) {
	h.mu.Lock()
	if !h.dirty {
		h.mu.Unlock()
		return
	}
	f := hashFile{Version: 1, Files: make(map[string]hashed, len(h.byID))}
	for _, file := range snap.Files {
		if e, ok := h.byID[file.ID]; ok {
			f.Files[file.ID] = e
		}
	}
	h.dirty = false
	h.mu.Unlock()
	data, _ := json.Marshal(f)
	tmp := h.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err == nil {
		_ = os.Rename(tmp, h.path)
	}
}

// hashLoop hashes the listed files the cache has no current hash for, one
// at a time, after every change of the files, until the library closes.
func (l *Library) hashLoop() {
	defer close(l.hashDone)
	if len(l.hashRoots) == 0 {
		<-l.quit // nothing to hash in the background
		return
	}
	for {
		snap := l.files.Snapshot()
		for _, f := range snap.Files {
			select {
			case <-l.quit:
				l.hashes.save(snap)
				return
			default:
			}
			if !slices.Contains(l.hashRoots, f.Root) {
				continue
			}
			if _, ok := l.hashes.current(f); ok {
				continue
			}
			if sum, err := l.hashFile(f); err == nil {
				l.hashes.set(f, sum)
			}
		}
		l.hashes.save(snap)
		select {
		case <-l.hashes.wake:
		case <-l.quit:
			return
		}
	}
}

// hashFile hashes a listed file if it is still the version listed.
func (l *Library) hashFile(f *catalog.File) (string, error) {
	fh, err := l.files.Open(f)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := blake3.New(32, nil)
	// Large reads (BLAKE3 is vectorised over 16 KiB and more), paced so a
	// library of models does not compete with ComfyUI loading one.
	buf := make([]byte, 1<<20)
	start, done := time.Now(), int64(0)
	for {
		n, err := fh.Read(buf)
		h.Write(buf[:n])
		done += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
		if wait := pace(done, time.Since(start), l.hashRate); wait > 0 {
			select {
			case <-time.After(wait):
			case <-l.quit:
				return "", errClosing
			}
		}
	}
	if fi, err := fh.Stat(); err != nil || fi.Size() != f.Size || fi.ModTime().UnixNano() != f.ModifiedNS {
		return "", os.ErrNotExist // changed while hashed: the next pass takes it
	}
	return "blake3:" + hex.EncodeToString(h.Sum(nil)), nil
}

var errClosing = errors.New("the library is closing")

// pace is how long to wait, having read done bytes in elapsed, to stay at
// rate bytes per second (0: no limit).
func pace(done int64, elapsed time.Duration, rate int64) time.Duration {
	if rate <= 0 {
		return 0
	}
	due := time.Duration(float64(done) / float64(rate) * float64(time.Second))
	return due - elapsed
}

// ValidHash checks a content hash as comfyshim writes them:
// "blake3:" and 64 lowercase hex digits.
func ValidHash(h string) bool {
	hx, ok := strings.CutPrefix(h, "blake3:")
	if !ok || len(hx) != 64 {
		return false
	}
	for _, c := range hx {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ByHash returns a listed asset whose content has hash ("blake3:<hex>"), as
// far as the background hashing has got.
func (l *Library) ByHash(hash string) (Asset, bool) {
	for _, id := range l.hashes.ids(hash) {
		if a, ok := l.Get(id); ok && !a.Missing {
			if h, ok := l.hashes.current(a.File); ok && h == hash {
				return a, true
			}
		}
	}
	return Asset{}, false
}

// ByHashIn returns a listed asset in root (for models, in category) whose
// content has hash, as far as the background hashing has got.
func (l *Library) ByHashIn(hash, root, category string) (Asset, bool) {
	for _, id := range l.hashes.ids(hash) {
		a, ok := l.Get(id)
		if !ok || a.Missing || a.Root != root || (category != "" && a.Category != category && !strings.HasPrefix(a.Rel, category+"/")) {
			continue
		}
		if h, ok := l.hashes.current(a.File); ok && h == hash {
			return a, true
		}
	}
	return Asset{}, false
}

// Hash returns an asset's content hash if it is known yet.
func (l *Library) Hash(a Asset) (string, bool) {
	if a.Missing {
		return "", false
	}
	return l.hashes.current(a.File)
}

// WaitHashed waits until the background hashing has hashed every listed
// file of the hashed roots, or d passes (for tests).
func (l *Library) WaitHashed(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		all := true
		for _, f := range l.files.Snapshot().Files {
			if _, ok := l.hashes.current(f); !ok && slices.Contains(l.hashRoots, f.Root) {
				all = false
				break
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
