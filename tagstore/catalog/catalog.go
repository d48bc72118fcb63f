// Package catalog lists the files of ComfyUI's input/, output/ and models/
// folders (and the model folders extra_model_paths.yaml adds) as a set of
// files with stable ids and metadata, kept current by watching the folders:
// a change rescans only the folder it touched.
package catalog

import (
	"cmp"
	"encoding/binary"
	"errors"
	"io/fs"
	"log/slog"
	"mime"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/google/uuid"

	"github.com/comfyshim/comfyshim/tagstore/internal/watch"
)

// Root is one asset folder. Name is the root: "input", "output" or
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
	Rel        string // slash-separated path inside the root (models: <category>/...)
	Name       string // base name
	Category   string // models only: the model category, "" for a file directly under models/
	Size       int64
	MIME       string
	CreatedNS  int64  // creation time in Unix nanoseconds (see Created)
	ModifiedNS int64  // modification time in Unix nanoseconds
	AccessedNS int64  // last access time in Unix nanoseconds
	LoaderPath string // models only: path inside the model folder
	dir        string // the real folder it was scanned in (symlinks resolved); shared by its folder's files
}

// Times are kept as integers: three time.Time values made a record a
// third larger, with a pointer each for the collector to chase.

// Created is when the file was made: the earlier of its birth and
// modification times (a copy can keep an older modification time).
func (f *File) Created() time.Time { return time.Unix(0, f.CreatedNS) }

// Modified is the file's modification time.
func (f *File) Modified() time.Time { return time.Unix(0, f.ModifiedNS) }

// Accessed is the file's last access time (its modification time where
// the platform does not tell).
func (f *File) Accessed() time.Time { return time.Unix(0, f.AccessedNS) }

// Path is the root name and path inside it, e.g. "output/ComfyUI_00001_.png".
func (f *File) Path() string { return f.Root + "/" + f.Rel }

// namespace seeds the UUIDv5 ids of asset files.
var namespace = uuid.MustParse("6f0c2b1e-8a53-5d0e-9c61-7d3f2a9b4e10")

// ID is the stable id of the file at rel inside the root named root.
func ID(root, rel string) string {
	return uuid.NewSHA1(namespace, []byte(root+"/"+rel)).String()
}

// Snapshot is the set of files at one moment. Immutable.
type Snapshot struct {
	Files []*File // sorted by id
	Gen   uint64
}

// Get returns the file with id.
func (s *Snapshot) Get(id string) (*File, bool) {
	i, ok := slices.BinarySearchFunc(s.Files, id, func(f *File, id string) int { return strings.Compare(f.ID, id) })
	if !ok {
		return nil, false
	}
	return s.Files[i], true
}

// Options tune a Catalog; the zero value is fine.
type Options struct {
	Logger *slog.Logger
	// Debounce gathers the bursts of events a generation or a copy makes
	// (200 ms).
	Debounce time.Duration
	// RescanEvery is the interval of full rescans, a safety net for missed
	// events: network filesystems deliver none (5 minutes).
	RescanEvery time.Duration
	// OnChange is called after each new snapshot is published; it must not
	// block.
	OnChange func()
}

// Catalog keeps a current Snapshot of the roots.
type Catalog struct {
	roots    []Root
	log      *slog.Logger
	onChange func()
	snap     atomic.Pointer[Snapshot]
	gen      atomic.Uint64

	scanMu  sync.Mutex           // one scan at a time; guards dirs
	dirs    map[string]*dirState // by real path: every folder scanned
	watcher *watch.Watcher
	every   time.Duration
	reads   atomic.Int64 // folders read, for tests of what an event costs
	quit    chan struct{}
	wg      sync.WaitGroup
}

// dirState is one scanned folder: its files and the subfolders it owns.
type dirState struct {
	root    *Root
	rel     string            // path inside the root, "" at its top
	files   map[string]*File  // by base name
	subdirs map[string]string // base name -> real path of a subfolder walked from here
}

// New scans the roots once and starts watching them. Roots whose folder
// does not exist yet are found by a later full rescan.
func New(roots []Root, opts Options) (*Catalog, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 200 * time.Millisecond
	}
	if opts.RescanEvery <= 0 {
		opts.RescanEvery = 5 * time.Minute
	}
	w, err := watch.New(opts.Debounce, func(ev fsnotify.Event) bool { return ev.Op == fsnotify.Chmod }, opts.Logger)
	if err != nil {
		return nil, err
	}
	c := &Catalog{roots: roots, log: opts.Logger, onChange: opts.OnChange, watcher: w, every: opts.RescanEvery,
		dirs: map[string]*dirState{}, quit: make(chan struct{})}
	c.snap.Store(&Snapshot{})
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
	tick := time.NewTicker(c.every)
	defer tick.Stop()
	for {
		select {
		case b, ok := <-c.watcher.Batches():
			if !ok {
				return
			}
			if b.Lost {
				c.Rescan()
				continue
			}
			c.rescanPaths(b.Paths)
		case <-tick.C:
			c.Rescan()
		case <-c.quit:
			return
		}
	}
}

// Rescan walks every root from scratch and publishes a new snapshot if
// anything changed. Files whose size and modification time did not change
// keep their record.
func (c *Catalog) Rescan() {
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	old := c.snap.Load()
	for d := range c.dirs {
		c.watcher.Remove(d)
	}
	c.dirs = map[string]*dirState{}
	var found []*File
	for i := range c.roots {
		r := &c.roots[i]
		if r.Dir == "" {
			continue
		}
		top, err := filepath.EvalSymlinks(r.Dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				c.log.Warn("scanning assets", "root", r.Dir, "err", err)
			}
			continue // a folder that appears later is found by the periodic rescan
		}
		c.walk(top, r, "", 0, old, &found)
	}
	sortByID(found)
	if slices.Equal(found, old.Files) {
		return
	}
	c.publish(found)
}

// rescanPaths rescans the folders that events named: the folder an entry
// changed in, and the entry itself if it was a folder.
func (c *Catalog) rescanPaths(paths map[string]struct{}) {
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	todo := map[string]bool{}
	for p := range paths {
		if _, ok := c.dirs[filepath.Dir(p)]; ok {
			todo[filepath.Dir(p)] = true
		}
		if _, ok := c.dirs[p]; ok {
			todo[p] = true
		}
	}
	old := c.snap.Load()
	removed := map[string]bool{}
	var added []*File
	for d := range todo {
		c.refresh(d, old, removed, &added)
	}
	if len(removed) == 0 && len(added) == 0 {
		return
	}
	c.publish(merge(old.Files, removed, added))
}

// sortByID sorts files by id. The sort compares the ids' first eight
// bytes as one number, which orders as the text does, and the rest of the
// text only on a tie: comparing 1M ids as text took most of a second.
func sortByID(files []*File) {
	type keyed struct {
		k uint64
		f *File
	}
	ks := make([]keyed, len(files))
	for i, f := range files {
		var b [8]byte
		copy(b[:], f.ID)
		ks[i] = keyed{binary.BigEndian.Uint64(b[:]), f}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		if a.k != b.k {
			return cmp.Compare(a.k, b.k)
		}
		return strings.Compare(a.f.ID, b.f.ID)
	})
	for i, kv := range ks {
		files[i] = kv.f
	}
}

func (c *Catalog) publish(files []*File) {
	c.snap.Store(&Snapshot{Files: files, Gen: c.gen.Add(1)})
	if c.onChange != nil {
		c.onChange()
	}
}

// merge returns files without the removed ids, with added in place (a
// file in added replaces the one with its id). It copies runs of unchanged
// records and finds each edit by binary search, so a change of a few files
// costs little more than a copy of the slice.
func merge(files []*File, removed map[string]bool, added []*File) []*File {
	type edit struct {
		id string
		f  *File // nil: remove
	}
	edits := make([]edit, 0, len(removed)+len(added))
	for id := range removed {
		edits = append(edits, edit{id: id})
	}
	for _, f := range added {
		edits = append(edits, edit{f.ID, f})
	}
	// Sort by id; for one id an addition (f != nil) wins over a removal.
	slices.SortFunc(edits, func(a, b edit) int {
		if c := strings.Compare(a.id, b.id); c != 0 {
			return c
		}
		return boolCmp(a.f == nil, b.f == nil)
	})
	out := make([]*File, 0, len(files)+len(added))
	i := 0
	for k, e := range edits {
		if k > 0 && edits[k-1].id == e.id {
			continue
		}
		j, found := slices.BinarySearchFunc(files[i:], e.id, func(f *File, id string) int { return strings.Compare(f.ID, id) })
		j += i
		out = append(out, files[i:j]...)
		if e.f != nil {
			out = append(out, e.f)
		}
		if found {
			j++
		}
		i = j
	}
	return append(out, files[i:]...)
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// maxDepth bounds how deep a walk goes, whatever symlinked folders do.
const maxDepth = 64

// walk scans the folder real (a resolved path) and everything below it not
// scanned yet, recording each folder and collecting its files. Symlinked
// folders are followed, as ComfyUI does (models on another disk are usually
// linked in), each real folder once so link loops end; symlinked files are
// not listed. Hidden entries and ComfyUI's placeholders are skipped.
func (c *Catalog) walk(real string, r *Root, rel string, depth int, old *Snapshot, found *[]*File) {
	if _, seen := c.dirs[real]; seen || depth > maxDepth {
		return
	}
	st := &dirState{root: r, rel: rel, subdirs: map[string]string{}}
	c.dirs[real] = st
	_ = c.watcher.Add(real)
	c.reads.Add(1)
	d, entries, err := readFolder(real)
	if err != nil {
		st.files = map[string]*File{}
		c.log.Warn("scanning assets", "path", real, "err", err)
		return
	}
	defer d.close()
	st.files = make(map[string]*File, len(entries))
	for i, f := range c.describe(d, st, entries, old) {
		e := entries[i]
		if f != nil {
			st.files[f.Name] = f // f's own string: the listing's can go
			*found = append(*found, f)
		} else if sub := c.subdir(real, e); sub != "" {
			if _, seen := c.dirs[sub]; !seen && depth < maxDepth {
				st.subdirs[e.Name()] = sub
				c.walk(sub, r, path.Join(rel, e.Name()), depth+1, old, found)
			}
		}
	}
}

// entry returns the asset record for a regular file in d, reusing the
// old one when the file did not change; nil for anything else.
func (c *Catalog) entry(d *folder, st *dirState, e fs.DirEntry, old *Snapshot) *File {
	name := e.Name()
	if strings.HasPrefix(name, ".") || !e.Type().IsRegular() || isPlaceholder(name) {
		return nil
	}
	m, err := d.stat(e)
	if err != nil || !m.regular {
		return nil
	}
	dir := d.path
	same := func(f *File) bool { return f.Size == m.size && f.ModifiedNS == m.mtime.UnixNano() && f.dir == dir }
	if f := st.files[name]; f != nil && same(f) {
		return f // known to this folder already: no id to compute
	}
	rel := path.Join(st.rel, name)
	if st.root.Category != "" {
		rel = st.root.Category + "/" + rel
	}
	if st.root.Name == "models" {
		// Only model files of a model category are assets: not a .txt in
		// loras/, not configs/, not a file directly under models/.
		folder, _, _ := strings.Cut(rel, "/")
		if !strings.Contains(rel, "/") {
			folder = ""
		}
		if _, ok := modelCategory(folder, name); !ok {
			return nil
		}
	}
	id := ID(st.root.key(), rel)
	if f, ok := old.Get(id); ok && same(f) {
		return f
	}
	return newFile(*st.root, id, rel, dir, m)
}

// describe returns the asset record of each entry of d (nil for what is
// not an asset). A large folder is described by a goroutine per core: at
// start the stat calls and id hashing of 100k files were the longest part
// of the time to ready. entry only reads shared state.
func (c *Catalog) describe(d *folder, st *dirState, entries []fs.DirEntry, old *Snapshot) []*File {
	out := make([]*File, len(entries))
	workers := min(runtime.GOMAXPROCS(0), len(entries)/256)
	if workers <= 1 {
		for i, e := range entries {
			out[i] = c.entry(d, st, e, old)
		}
		return out
	}
	var wg sync.WaitGroup
	chunk := (len(entries) + workers - 1) / workers
	for lo := 0; lo < len(entries); lo += chunk {
		hi := min(lo+chunk, len(entries))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				out[i] = c.entry(d, st, entries[i], old)
			}
		})
	}
	wg.Wait()
	return out
}

// subdir returns the real path of a folder entry (following a symlink), or
// "" when the entry is not a folder to walk.
func (c *Catalog) subdir(dir string, e fs.DirEntry) string {
	if strings.HasPrefix(e.Name(), ".") {
		return ""
	}
	p := filepath.Join(dir, e.Name())
	switch t := e.Type(); {
	case t.IsDir():
		return p
	case t&fs.ModeSymlink != 0:
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return "" // dangling
		}
		if fi, err := os.Stat(real); err == nil && fi.IsDir() {
			return real
		}
	}
	return ""
}

// refresh rescans one known folder: its files, and subfolders that appeared
// or went away. Removed ids and new or changed records are collected.
func (c *Catalog) refresh(dir string, old *Snapshot, removed map[string]bool, added *[]*File) {
	st, ok := c.dirs[dir]
	if !ok {
		return // dropped with its parent earlier in this batch
	}
	c.reads.Add(1)
	d, entries, err := readFolder(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("scanning assets", "path", dir, "err", err)
		}
		c.drop(dir, removed)
		return
	}
	defer d.close()
	files := make(map[string]*File, len(entries))
	subdirs := map[string]string{}
	for i, f := range c.describe(d, st, entries, old) {
		e := entries[i]
		name := e.Name()
		if f != nil {
			files[f.Name] = f
			if st.files[name] != f {
				*added = append(*added, f)
				delete(removed, f.ID)
			}
		} else if sub := c.subdir(dir, e); sub != "" {
			if was, ok := st.subdirs[name]; ok && was == sub {
				subdirs[name] = sub // known: its own events keep it current
				continue
			}
			if _, seen := c.dirs[sub]; !seen {
				subdirs[name] = sub
				var found []*File
				c.walk(sub, st.root, path.Join(st.rel, name), 0, old, &found)
				*added = append(*added, found...)
			}
		}
	}
	for name, f := range st.files {
		if files[name] == nil {
			removed[f.ID] = true
		}
	}
	for name, sub := range st.subdirs {
		if subdirs[name] != sub {
			c.drop(sub, removed)
		}
	}
	st.files, st.subdirs = files, subdirs
}

// drop forgets a folder and everything scanned below it.
func (c *Catalog) drop(dir string, removed map[string]bool) {
	st, ok := c.dirs[dir]
	if !ok {
		return
	}
	delete(c.dirs, dir)
	c.watcher.Remove(dir)
	for _, f := range st.files {
		removed[f.ID] = true
	}
	for _, sub := range st.subdirs {
		c.drop(sub, removed)
	}
}

// isPlaceholder matches the empty "put_checkpoints_here" files ComfyUI ships.
func isPlaceholder(name string) bool {
	return strings.HasPrefix(name, "put_") && strings.HasSuffix(name, "_here")
}

// NewFile describes the file named by rel inside root r, found in the real
// folder dir, as a scan would: for a file the scan has not reached yet.
func NewFile(r Root, rel, dir string, info fs.FileInfo) *File {
	return newFile(r, ID(r.key(), rel), rel, dir, metaOf(filepath.Join(dir, path.Base(rel)), info))
}

func newFile(r Root, id, rel, dir string, m meta) *File {
	root := r.Name
	f := &File{
		ID:         id,
		Root:       root,
		Rel:        rel,
		Name:       path.Base(rel),
		Size:       m.size,
		MIME:       MIMEType(rel),
		ModifiedNS: m.mtime.UnixNano(),
		CreatedNS:  m.mtime.UnixNano(),
		AccessedNS: m.mtime.UnixNano(),
		dir:        dir,
	}
	if !m.atime.IsZero() {
		f.AccessedNS = m.atime.UnixNano()
	}
	// A copy that kept its modification time was made earlier than the
	// copy's birth time says: take the earlier of the two.
	if !m.btime.IsZero() && m.btime.UnixNano() < f.CreatedNS {
		f.CreatedNS = m.btime.UnixNano()
	}
	if root == "models" {
		if folder, inside, ok := strings.Cut(rel, "/"); ok {
			f.Category, _ = modelCategory(folder, f.Name)
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
	if f.dir == "" {
		return nil, fs.ErrNotExist
	}
	fh, err := os.Open(filepath.Join(f.dir, f.Name))
	if err != nil {
		return nil, err
	}
	if fi, err := fh.Stat(); err != nil || !fi.Mode().IsRegular() {
		fh.Close()
		return nil, fs.ErrNotExist
	}
	return fh, nil
}
