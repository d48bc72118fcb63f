package assets

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"lukechampine.com/blake3"

	"github.com/comfyshim/comfyshim/tagstore"
	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

// Errors of uploads.
var (
	ErrUploadTooLarge = errors.New("the file is larger than the upload limit")
	ErrBadName        = errors.New("not a usable file name")
	ErrNoFolder       = errors.New("no folder for uploads is configured")
)

// Staged is an uploaded file written to disk but not yet placed: its bytes
// are durable under a hidden temporary name.
type Staged struct {
	path string
	dir  string // the root folder it was staged in
	Size int64
	Hash string // "blake3:<hex>"
}

// Stage writes r (at most limit bytes) to a hidden temporary file, hashing
// it with BLAKE3 as it streams: memory stays flat whatever the size.
func (l *Library) Stage(r io.Reader, limit int64) (*Staged, error) {
	dir := l.rootDir("input", "")
	if dir == "" {
		return nil, ErrNoFolder
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	p := filepath.Join(dir, ".comfyshim-upload-"+hex.EncodeToString(rnd[:])+".part")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	h := blake3.New(32, nil)
	// A multipart part reads in pieces of about 4 KiB: gather them into
	// large writes, or the file costs a system call per piece and BLAKE3
	// runs at a twentieth of its speed (it is vectorised over 16 KiB+).
	bw := bufio.NewWriterSize(f, 1<<20)
	hw := bufio.NewWriterSize(h, 1<<20)
	n, err := io.Copy(io.MultiWriter(bw, hw), io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = ErrUploadTooLarge
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = hw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(p)
		return nil, err
	}
	return &Staged{path: p, dir: dir, Size: n, Hash: "blake3:" + hex.EncodeToString(h.Sum(nil))}, nil
}

// Discard removes a staged file that will not be placed.
func (s *Staged) Discard() { _ = os.Remove(s.path) }

// rootDir is the folder of root (for models, of category within it), or ""
// when none is configured.
func (l *Library) rootDir(root, category string) string {
	for _, r := range l.roots {
		if r.Name == root && r.Category == "" {
			if category != "" {
				return filepath.Join(r.Dir, category)
			}
			return r.Dir
		}
	}
	return ""
}

// CleanName checks a client's file name: a base name (any folder part
// dropped), valid UTF-8, no control characters, not hidden.
func CleanName(name string) (string, error) {
	name = strings.TrimSpace(path.Base(strings.ReplaceAll(name, `\`, "/")))
	switch {
	case name == "" || name == "." || name == ".." || name == "/":
		return "", fmt.Errorf("%w: empty", ErrBadName)
	case strings.HasPrefix(name, "."):
		return "", fmt.Errorf("%w: %q is hidden", ErrBadName, name)
	case len(name) > 255 || !utf8.ValidString(name):
		return "", fmt.Errorf("%w: too long or not UTF-8", ErrBadName)
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f || strings.ContainsRune(`:*?"<>|`, r) }):
		return "", fmt.Errorf("%w: %q has characters Windows refuses", ErrBadName, name)
	}
	return name, nil
}

// Place moves a staged file to root (for models, into category) under name,
// or name (1), name (2)... if taken, never replacing a file; applies u to
// the new asset's entry; and returns the asset. The staged file is gone
// afterwards either way.
func (l *Library) Place(s *Staged, root, category, name string, u Update) (Asset, error) {
	defer s.Discard()
	dir := l.rootDir(root, category)
	if dir == "" {
		return Asset{}, fmt.Errorf("%w (%s)", ErrNoFolder, root)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Asset{}, err
	}
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	final := ""
	for i := 0; i < 10000 && final == ""; i++ {
		try := name
		if i > 0 {
			try = fmt.Sprintf("%s (%d)%s", stem, i, ext)
		}
		p := filepath.Join(dir, try)
		// A link never replaces an existing file; a copy is the fallback
		// across filesystems (models on another disk).
		err := os.Link(s.path, p)
		if err != nil && !errors.Is(err, os.ErrExist) {
			err = copyNew(s.path, p)
		}
		switch {
		case err == nil:
			final = try
		case !errors.Is(err, os.ErrExist):
			return Asset{}, err
		}
	}
	if final == "" {
		return Asset{}, fmt.Errorf("%w: every variant of %q is taken", ErrBadName, name)
	}
	if err := tagstore.SyncDir(dir); err != nil {
		return Asset{}, err
	}
	rel := final
	if category != "" {
		rel = category + "/" + final
	}
	info, err := os.Stat(filepath.Join(dir, final))
	if err != nil {
		return Asset{}, err
	}
	f := catalog.NewFile(Root{Name: root}, rel, dir, info)
	l.hashes.set(f, s.Hash) // hashed while it streamed in
	a := Asset{File: f, Tags: DefaultTags(f)}
	// An uploaded file carries its defaults, "uploaded" (as OSS ComfyUI
	// tags what came through an upload) and the tags asked for.
	tags := append(append([]string{UploadedTag}, a.Tags...), derefTags(u.Tags)...)
	u.Tags = &tags
	if _, err := l.tags.Set(f.ID, tagstore.Entry{Path: f.Path(), Tags: a.Tags}, u); err != nil {
		return Asset{}, err
	}
	// The folder watch lists the new file in the background; the caller's
	// next read must find it, so wait (boundedly) for that.
	l.waitListed(f.ID, true, 5*time.Second)
	if listed, ok := l.Get(f.ID); ok {
		return listed, nil
	}
	if e, ok := l.tags.Get(f.ID); ok {
		a.Tags = e.Tags
	}
	return a, nil
}

// UploadedTag marks files that came through an upload.
const UploadedTag = "uploaded"

func derefTags(t *[]string) []string {
	if t == nil {
		return nil
	}
	return *t
}

// copyNew copies from into a new file to (failing if it exists), durably.
func copyNew(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(to)
	}
	return err
}

// ErrProtected refuses deleting a model file without the caller saying so.
var ErrProtected = errors.New("model files are deleted only when the request asks for it explicitly")

// Delete removes an asset: its file (for input, output and temp; a model's
// only with withModelFile) and its entry in the tags file. A missing
// asset's entry is removed alone.
func (l *Library) Delete(a Asset, withModelFile bool) error {
	if !a.Missing {
		if a.Root == "models" && !withModelFile {
			return ErrProtected
		}
		f, err := l.files.Open(a.File) // the file the catalog listed, in its real folder
		if err != nil {
			return err
		}
		p := f.Name()
		_ = f.Close()
		// Remove never follows a symlink: at worst a link put there since
		// the scan goes, not its target.
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		_ = tagstore.SyncDir(filepath.Dir(p))
	}
	if err := l.tags.Delete(a.ID); err != nil {
		return err
	}
	l.waitTags(l.tags.Generation())
	if !a.Missing {
		// The folder watch drops the file in the background; the caller's
		// next read must not find it, so wait (boundedly) for that.
		l.waitListed(a.ID, false, 5*time.Second)
	}
	return nil
}

// waitListed waits until the index lists id (or no longer does), or d
// passes.
func (l *Library) waitListed(id string, listed bool, d time.Duration) {
	l.waitIndex(func(x *Index) bool { _, ok := x.position(id); return ok == listed }, d)
}

// Rescan walks every folder again (what the folder watch may have missed,
// on network filesystems say), and returns once the index shows the result:
// how many files are listed before and after.
func (l *Library) Rescan() (before, after int) {
	before = len(l.files.Snapshot().Files)
	l.files.Rescan()
	snap := l.files.Snapshot()
	l.Changed()
	l.waitIndex(func(x *Index) bool { return x.FileGen >= snap.Gen }, 0)
	return before, len(snap.Files)
}

// Missing counts the entries of the tags file whose file is gone.
func (l *Library) Missing() int {
	snap := l.files.Snapshot()
	n := 0
	l.tags.Each(func(id string) {
		if _, ok := snap.Get(id); !ok {
			n++
		}
	})
	return n
}

// MarkUploaded tags the file at rel inside root (input, output or temp)
// "uploaded", as OSS ComfyUI tags what came through an upload or was saved
// by a workflow. The file need not be listed yet: the tag waits for it.
func (l *Library) MarkUploaded(root, rel string) error {
	if root != "input" && root != "output" && root != "temp" {
		return fmt.Errorf("%w: %q is not a folder uploads go to", ErrBadName, root)
	}
	clean := path.Clean("/" + rel)[1:]
	if clean == "" || clean != rel || strings.Contains(rel, `\`) {
		return fmt.Errorf("%w: %q", ErrBadName, rel)
	}
	f := &catalog.File{Root: root, Rel: rel}
	_, err := l.tags.Add(catalog.ID(root, rel), tagstore.Entry{Path: f.Path(), Tags: DefaultTags(f)}, []string{UploadedTag})
	if err == nil {
		l.Changed()
	}
	return err
}

// Add places a staged upload as Place does, unless an asset in that folder
// (for models, that category) already has the same content: then that
// asset is returned, with the tags u asks for added, and created is false.
// Both asset APIs (Cloud's and Comfy API v2) dedup this way.
func (l *Library) Add(s *Staged, root, category, name string, u Update) (a Asset, created bool, err error) {
	if dup, ok := l.ByHashIn(s.Hash, root, category); ok {
		s.Discard()
		if tags := derefTags(u.Tags); len(tags) > 0 {
			if _, err := l.AddTags(dup, tags); err != nil {
				return Asset{}, false, err
			}
			dup, _ = l.Get(dup.ID)
		}
		return dup, false, nil
	}
	a, err = l.Place(s, root, category, name, u)
	return a, err == nil, err
}

// ErrChanged says the file with the asked-for hash no longer has it.
var ErrChanged = errors.New("the file with that hash changed")

// Copy stages the content of src again (a new, independent file), checking
// it still hashes to want. The caller places it.
func (l *Library) Copy(src Asset, want string, limit int64) (*Staged, error) {
	f, err := l.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := l.Stage(f, limit)
	if err != nil {
		return nil, err
	}
	if s.Hash != want {
		s.Discard()
		return nil, ErrChanged
	}
	return s, nil
}

// Stat describes the file at rel inside root (input, output or temp) as
// the catalog will list it, without waiting for the folder watch: for
// files ComfyUI has just written.
func (l *Library) Stat(root, rel string) (*catalog.File, error) {
	dir := l.rootDir(root, "")
	if dir == "" {
		return nil, fmt.Errorf("%w (%s)", ErrNoFolder, root)
	}
	p, err := inside(dir, rel)
	if err != nil {
		return nil, err
	}
	info, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a file", rel)
	}
	return catalog.NewFile(Root{Name: root}, rel, filepath.Dir(p), info), nil
}

// inside joins a slash-separated relative path named by someone else to
// dir, refusing anything that would leave it: "..", absolute or hidden
// parts, and symbolic links pointing out of the folder.
func inside(dir, rel string) (string, error) {
	if rel == "" || !fs.ValidPath(rel) || strings.Contains(rel, `\`) {
		return "", fmt.Errorf("%w: %q", ErrBadName, rel)
	}
	for _, part := range strings.Split(rel, "/") {
		if strings.HasPrefix(part, ".") || strings.ContainsRune(part, ':') {
			return "", fmt.Errorf("%w: %q", ErrBadName, rel)
		}
	}
	p := filepath.Join(dir, filepath.FromSlash(rel))
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	if r, err := filepath.Rel(realDir, real); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: %q leaves its folder", ErrBadName, rel)
	}
	return p, nil
}
