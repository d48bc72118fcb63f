// Package catalog lists the files of ComfyUI's input/, output/ and models/
// folders as assets: stable ids, metadata, default tags, and a watch that
// picks up new files without a restart.
package catalog

import (
	"errors"
	"io/fs"
	"log/slog"
	"mime"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/google/uuid"
)

// Root is one asset folder. Name is the root tag: "input", "output" or
// "models". Category, for a folder that holds one model category (from
// extra_model_paths.yaml), is that category; files in it are reported as if
// they were in models/<category>/.
type Root struct {
	Name     string
	Dir      string
	Category string
}

// key names the root in asset ids: a folder of extra_model_paths.yaml gets
// ids of its own, distinct from models/<category>/ with the same file names.
func (r Root) key() string {
	if r.Category == "" {
		return r.Name
	}
	return r.Name + "@" + r.Category + "@" + filepath.Clean(r.Dir)
}

// File is one asset file. Values are shared between snapshots: read only.
type File struct {
	ID         string
	Root       string // root name
	Rel        string // slash-separated path inside the root
	Name       string // base name
	Size       int64
	MIME       string
	Created    time.Time
	Modified   time.Time
	Accessed   time.Time
	Defaults   []string // tags before any edit
	LoaderPath string   // models only: path inside the model folder
	full       string   // the file's path with symlinked folders resolved, as scanned
}

// Path is the root name and path inside it, e.g. "output/ComfyUI_00001_.png".
func (f *File) Path() string { return f.Root + "/" + f.Rel }

// namespace seeds the UUIDv5 ids of asset files.
var namespace = uuid.MustParse("6f0c2b1e-8a53-5d0e-9c61-7d3f2a9b4e10")

// ID is the stable id of the file at rel inside the root named root.
func ID(root, rel string) string {
	return uuid.NewSHA1(namespace, []byte(root+"/"+rel)).String()
}

// DefaultTags are the tags a file has before anyone edits them, as current
// OSS ComfyUI gives them: the root, and for models "model_type:<folder>".
// The list is sorted.
func DefaultTags(root, rel string) []string {
	if root == "models" {
		if folder, _, ok := strings.Cut(rel, "/"); ok {
			return []string{"model_type:" + folder, "models"} // "model_type:" sorts before "models"
		}
	}
	return []string{root}
}

// Snapshot is the set of files at one scan. Immutable.
type Snapshot struct {
	Files []*File // sorted by id
	byID  map[string]*File
	Gen   uint64
}

// Get returns the file with id.
func (s *Snapshot) Get(id string) (*File, bool) {
	f, ok := s.byID[id]
	return f, ok
}

// Catalog keeps a current Snapshot of the roots.
type Catalog struct {
	roots []Root
	log   *slog.Logger
	snap  atomic.Pointer[Snapshot]
	gen   atomic.Uint64

	scanMu  sync.Mutex // one scan at a time
	watcher *fsnotify.Watcher
	kick    chan struct{}
	quit    chan struct{}
	wg      sync.WaitGroup
}

// Interval between full rescans, a safety net for missed events (network
// filesystems deliver none).
const rescanEvery = 5 * time.Minute

// debounce gathers the bursts of events a generation or a copy makes.
const debounce = 200 * time.Millisecond

// New scans the roots once and starts watching them. Roots whose folder
// does not exist yet are scanned when it appears.
func New(roots []Root, log *slog.Logger) (*Catalog, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Catalog{roots: roots, log: log, kick: make(chan struct{}, 1), quit: make(chan struct{})}
	c.snap.Store(&Snapshot{byID: map[string]*File{}})
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	c.watcher = w
	c.Rescan()
	c.wg.Add(1)
	go c.loop()
	return c, nil
}

// Snapshot returns the current set of files.
func (c *Catalog) Snapshot() *Snapshot { return c.snap.Load() }

// Close stops watching.
func (c *Catalog) Close() error {
	select {
	case <-c.quit:
		return nil
	default:
	}
	close(c.quit)
	err := c.watcher.Close()
	c.wg.Wait()
	return err
}

func (c *Catalog) loop() {
	defer c.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	tick := time.NewTicker(rescanEvery)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-c.watcher.Events:
			if !ok {
				return
			}
			if ev.Op != fsnotify.Chmod {
				timer.Reset(debounce)
			}
		case err, ok := <-c.watcher.Errors:
			if !ok {
				return
			}
			c.log.Warn("watching asset folders", "err", err)
			timer.Reset(debounce)
		case <-timer.C:
			c.Rescan()
		case <-tick.C:
			c.Rescan()
		case <-c.quit:
			timer.Stop()
			return
		}
	}
}

// Rescan walks the roots and publishes a new snapshot if anything changed.
// Files whose size and modification time did not change keep their record.
func (c *Catalog) Rescan() {
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	old := c.snap.Load()
	var files []*File
	changed := false
	for _, r := range c.roots {
		if r.Dir == "" {
			continue
		}
		c.walkRoot(r, func(rel, full string, info fs.FileInfo) {
			if r.Category != "" {
				rel = r.Category + "/" + rel
			}
			id := ID(r.key(), rel)
			if f, ok := old.byID[id]; ok && f.Size == info.Size() && f.Modified.Equal(info.ModTime()) && f.full == full {
				files = append(files, f)
				return
			}
			changed = true
			files = append(files, newFile(r, rel, full, info))
		})
	}
	if !changed && len(files) == len(old.Files) {
		return
	}
	slices.SortFunc(files, func(a, b *File) int { return strings.Compare(a.ID, b.ID) })
	byID := make(map[string]*File, len(files))
	for _, f := range files {
		byID[f.ID] = f
	}
	c.snap.Store(&Snapshot{Files: files, byID: byID, Gen: c.gen.Add(1)})
}

// maxDepth bounds how deep a walk goes, whatever symlinked folders do.
const maxDepth = 64

// walkRoot calls found for every asset file under r. Symlinked folders are
// followed, as ComfyUI does (models on another disk are usually linked in),
// each real folder once so a link loop ends; symlinked files are not listed.
// Hidden files and folders and ComfyUI's placeholders are skipped.
func (c *Catalog) walkRoot(r Root, found func(rel, full string, info fs.FileInfo)) {
	top, err := filepath.EvalSymlinks(r.Dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("scanning assets", "root", r.Dir, "err", err)
		}
		return // a folder that appears later is found by the periodic rescan
	}
	visited := map[string]bool{}
	var walk func(dir, rel string, depth int)
	walk = func(dir, rel string, depth int) {
		if visited[dir] || depth > maxDepth {
			return
		}
		visited[dir] = true
		_ = c.watcher.Add(dir)
		entries, err := os.ReadDir(dir)
		if err != nil {
			c.log.Warn("scanning assets", "path", dir, "err", err)
			return
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue
			}
			p := filepath.Join(dir, name)
			sub := path.Join(rel, name)
			switch t := e.Type(); {
			case t&fs.ModeSymlink != 0:
				real, err := filepath.EvalSymlinks(p)
				if err != nil {
					continue // dangling
				}
				if fi, err := os.Stat(real); err == nil && fi.IsDir() {
					walk(real, sub, depth+1)
				}
			case t.IsDir():
				walk(p, sub, depth+1)
			case t.IsRegular() && !isPlaceholder(name):
				info, err := e.Info()
				if err == nil {
					found(sub, p, info)
				}
			}
		}
	}
	walk(top, "", 0)
}

// isPlaceholder matches the empty "put_checkpoints_here" files ComfyUI ships.
func isPlaceholder(name string) bool {
	return strings.HasPrefix(name, "put_") && strings.HasSuffix(name, "_here")
}

func newFile(r Root, rel, full string, info fs.FileInfo) *File {
	root := r.Name
	f := &File{
		ID:       ID(r.key(), rel),
		Root:     root,
		Rel:      rel,
		Name:     path.Base(rel),
		Size:     info.Size(),
		MIME:     MIMEType(rel),
		Modified: info.ModTime(),
		Created:  info.ModTime(),
		Accessed: info.ModTime(),
		Defaults: DefaultTags(root, rel),
		full:     full,
	}
	if at, ok := accessTime(info); ok {
		f.Accessed = at
	}
	// A copy that kept its modification time was made earlier than the
	// copy's birth time says: take the earlier of the two.
	if bt, ok := birthTime(full, info); ok && bt.Before(f.Created) {
		f.Created = bt
	}
	if root == "models" {
		if _, inside, ok := strings.Cut(rel, "/"); ok {
			f.LoaderPath = inside
		}
	}
	return f
}

var extraTypes = map[string]string{
	".safetensors": "application/octet-stream",
	".ckpt":        "application/octet-stream",
	".pt":          "application/octet-stream",
	".pth":         "application/octet-stream",
	".bin":         "application/octet-stream",
	".gguf":        "application/octet-stream",
	".mp4":         "video/mp4",
	".webm":        "video/webm",
	".mov":         "video/quicktime",
	".mp3":         "audio/mpeg",
	".wav":         "audio/wav",
	".flac":        "audio/flac",
	".ogg":         "audio/ogg",
	".glb":         "model/gltf-binary",
	".latent":      "application/octet-stream",
}

// MIMEType guesses a file's type from its extension.
func MIMEType(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := extraTypes[ext]; ok {
		return t
	}
	if t := mime.TypeByExtension(ext); t != "" {
		return t
	}
	return "application/octet-stream"
}

// Open opens an asset's file for reading: the path the scan found it at,
// never one derived from a request. Only a regular file is opened.
func (c *Catalog) Open(f *File) (*os.File, error) {
	if f.full == "" {
		return nil, fs.ErrNotExist
	}
	fh, err := os.Open(f.full)
	if err != nil {
		return nil, err
	}
	if fi, err := fh.Stat(); err != nil || !fi.Mode().IsRegular() {
		fh.Close()
		return nil, fs.ErrNotExist
	}
	return fh, nil
}
