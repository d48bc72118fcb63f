package tagstore

import (
	"bufio"
	"bytes"
	"errors"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"strings"
)

// A compaction writes the JSON file without the store keeping a rendered
// copy of every entry: the new file is the file on disk with the entries
// changed since it was written (or read) replaced, streamed from one to the
// other off the committer. Only when the file on disk is not in Encode's
// layout (a person's hand save, or no file) is every entry rendered.

// compactPlan is what a compaction writes.
type compactPlan struct {
	full bool     // every entry is in ids/raws; else they are the changes to merge into the file on disk
	ids  []string // sorted
	raws [][]byte // the renderings of ids; nil: the entry is removed
}

// errNotCanonical means the file on disk is not in the layout a merge
// reads: the compaction is redone with every entry rendered.
var errNotCanonical = errors.New("tags file not in comfyshim's own layout")

// prepareCompaction writes the new JSON file beside the one on disk. A
// merge reads the file on disk, which must be the one expected (else
// errStale: a person saved it).
func prepareCompaction(path string, mode os.FileMode, expected fileSig, plan compactPlan) (prepared, error) {
	if plan.full {
		return prepareFile(path, mode, func(w io.Writer) error {
			return mergeInto(w, nil, plan.ids, plan.raws)
		})
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return prepared{}, errStale
	}
	if err != nil {
		return prepared{}, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !metaOf(fi).sameMeta(expected) {
		return prepared{}, errStale
	}
	old := &checkedReader{r: f, sum: crc32.New(castagnoli)}
	prep, err := prepareFile(path, mode, func(w io.Writer) error {
		return mergeInto(w, old, plan.ids, plan.raws)
	})
	if err != nil {
		return prepared{}, err
	}
	if old.sum.Sum32() != expected.crc || old.n != expected.size {
		prep.discard()
		return prepared{}, errStale // what was read is not the file the store holds
	}
	return prep, nil
}

// checkedReader counts and checksums what is read through it.
type checkedReader struct {
	r   io.Reader
	sum hash.Hash32
	n   int64
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.sum.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// The lines of Encode's layout around the entries, as fileHeader and
// fileFooter write them.
var (
	headerLines = strings.Split(fileHeader, "\n")
	footerLines = strings.Split(strings.Trim(fileFooter, "\n"), "\n")
)

// mergeInto writes a file in Encode's layout: the entries of old (a file
// in that layout, sorted by id; nil: none) with those named in ids replaced
// by raws (nil: removed; an id old lacks: added). ids are sorted. old is
// read to its end. Anything in old outside the layout is errNotCanonical.
func mergeInto(w io.Writer, old io.Reader, ids []string, raws [][]byte) error {
	out := entryWriter{w: w}
	if _, err := io.WriteString(w, fileHeader); err != nil {
		return err
	}
	k := 0
	if old != nil {
		// Long enough for an entry's longest line: 64 KiB of metadata, or
		// 256 tags of 128 bytes (escaped, at most six bytes a byte).
		br := bufio.NewReaderSize(old, 1<<20)
		line := func() ([]byte, error) {
			l, err := br.ReadSlice('\n')
			if err != nil {
				return nil, errNotCanonical // too long, or no newline at the end
			}
			return l[:len(l)-1], nil
		}
		for _, want := range headerLines {
			l, err := line()
			if err != nil || string(l) != want {
				return errNotCanonical
			}
		}
		var entry []byte
		prev, more := "", false // more: the last entry ended with a comma
		for {
			l, err := line()
			if err != nil {
				return err
			}
			if string(l) == footerLines[0] {
				if more {
					return errNotCanonical
				}
				break
			}
			if prev != "" && !more {
				return errNotCanonical
			}
			// An entry: `    "<id>": {`, lines indented by six, `    }` or `    },`.
			if len(l) != 4+38+3 || !bytes.HasPrefix(l, []byte(`    "`)) || !bytes.HasSuffix(l, []byte(`": {`)) {
				return errNotCanonical
			}
			id := string(l[5 : 5+36])
			if id <= prev {
				return errNotCanonical // unsorted or repeated: not a file comfyshim wrote
			}
			prev = id
			entry = append(append(entry[:0], '\n'), l...)
			for {
				l, err := line()
				if err != nil {
					return err
				}
				entry = append(append(entry, '\n'), l...)
				if bytes.HasPrefix(l, []byte("      ")) {
					continue
				}
				if more = string(l) == "    },"; more {
					entry = entry[:len(entry)-1]
				} else if string(l) != "    }" {
					return errNotCanonical
				}
				break
			}
			for ; k < len(ids) && ids[k] < id; k++ {
				if err := out.put(raws[k]); err != nil {
					return err
				}
			}
			if k < len(ids) && ids[k] == id {
				err = out.put(raws[k])
				k++
			} else {
				err = out.put(entry)
			}
			if err != nil {
				return err
			}
		}
		l, err := line()
		if err != nil || string(l) != footerLines[1] {
			return errNotCanonical
		}
		if _, err := br.ReadByte(); err != io.EOF {
			return errNotCanonical
		}
	}
	for ; k < len(ids); k++ {
		if err := out.put(raws[k]); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, fileFooter)
	return err
}

// entryWriter writes entries with the separating commas.
type entryWriter struct {
	w    io.Writer
	some bool
}

// put writes one rendered entry; nil writes nothing.
func (e *entryWriter) put(raw []byte) error {
	if raw == nil {
		return nil
	}
	if e.some {
		if _, err := e.w.Write([]byte{','}); err != nil {
			return err
		}
	}
	e.some = true
	_, err := e.w.Write(raw)
	return err
}
