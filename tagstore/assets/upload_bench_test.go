package assets

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// pieces reads like a multipart part: at most 4 KiB at a time.
type pieces struct{ left int64 }

func (p *pieces) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := int64(min(len(b), 4096))
	n = min(n, p.left)
	p.left -= n
	return int(n), nil
}

// BenchmarkStage writes and hashes an upload that arrives in 4 KiB pieces.
func BenchmarkStage(b *testing.B) {
	dir := b.TempDir()
	os.MkdirAll(filepath.Join(dir, "input"), 0o755)
	l, err := Open([]Root{{Name: "input", Dir: filepath.Join(dir, "input")}}, filepath.Join(dir, "tags.json"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const size = 64 << 20
	b.SetBytes(size)
	for b.Loop() {
		s, err := l.Stage(&pieces{left: size}, 1<<40)
		if err != nil {
			b.Fatal(err)
		}
		s.Discard()
	}
}
