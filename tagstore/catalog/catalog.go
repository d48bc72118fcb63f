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
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// Root is one asset folder. Name is the root tag: "input", "output" or "models".
type Root struct {
	Name string
	Dir  string
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
		_ = c.watcher.Add(r.Dir) // error if missing: then the rescan ticker finds it later
		err := filepath.WalkDir(r.Dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == r.Dir && errors.Is(err, fs.ErrNotExist) {
					return fs.SkipAll
				}
				c.log.Warn("scanning assets", "path", p, "err", err)
				return nil
			}
			name := d.Name()
			if p != r.Dir && strings.HasPrefix(name, ".") {
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				if p != r.Dir {
					_ = c.watcher.Add(p)
				}
				return nil
			}
			// Only regular files: a symlink could lead outside the folder.
			if !d.Type().IsRegular() || isPlaceholder(name) {
				return nil
			}
			rel, err := filepath.Rel(r.Dir, p)
			if err != nil {
				return nil
			}
			rel = filepath.ToSlash(rel)
			info, err := d.Info()
			if err != nil {
				return nil
			}
			id := ID(r.Name, rel)
			if f, ok := old.byID[id]; ok && f.Size == info.Size() && f.Modified.Equal(info.ModTime()) {
				files = append(files, f)
				return nil
			}
			changed = true
			files = append(files, newFile(r.Name, rel, p, info))
			return nil
		})
		if err != nil {
			c.log.Warn("scanning assets", "root", r.Dir, "err", err)
		}
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

// isPlaceholder matches the empty "put_checkpoints_here" files ComfyUI ships.
func isPlaceholder(name string) bool {
	return strings.HasPrefix(name, "put_") && strings.HasSuffix(name, "_here")
}

func newFile(root, rel, full string, info fs.FileInfo) *File {
	f := &File{
		ID:       ID(root, rel),
		Root:     root,
		Rel:      rel,
		Name:     path.Base(rel),
		Size:     info.Size(),
		MIME:     MIMEType(rel),
		Modified: info.ModTime(),
		Created:  info.ModTime(),
		Accessed: info.ModTime(),
		Defaults: DefaultTags(root, rel),
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		f.Accessed = time.Unix(st.Atim.Unix())
	}
	var stx unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, full, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &stx) == nil && stx.Mask&unix.STATX_BTIME != 0 {
		// A copy that kept its modification time was made earlier than the
		// copy's birth time says: take the earlier of the two.
		if bt := time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec)); bt.Before(f.Created) {
			f.Created = bt
		}
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

// Open opens an asset's file for reading without leaving its root folder.
func (c *Catalog) Open(f *File) (*os.File, error) {
	for _, r := range c.roots {
		if r.Name == f.Root {
			root, err := os.OpenRoot(r.Dir)
			if err != nil {
				return nil, err
			}
			defer root.Close()
			return root.Open(filepath.FromSlash(f.Rel))
		}
	}
	return nil, fs.ErrNotExist
}
