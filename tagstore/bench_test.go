package tagstore

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// populate writes a sidecar of n assets with 5 tags each and returns the ids.
func populate(b *testing.B, path string, n int) []string {
	b.Helper()
	entries := make(map[string]Entry, n)
	ids := make([]string, 0, n)
	for i := 0; i < n; i++ {
		id := uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint(i))).String()
		ids = append(ids, id)
		entries[id] = Entry{
			Path:      fmt.Sprintf("output/batch_%03d/ComfyUI_%05d_.png", i/1000, i),
			Tags:      sortedUnique([]string{"output", fmt.Sprintf("seed:%d", i%97), fmt.Sprintf("style:%d", i%13), "favorite", fmt.Sprintf("batch:%d", i/1000)}),
			UpdatedAt: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		}
	}
	if err := os.WriteFile(path, Encode(entries), 0o644); err != nil {
		b.Fatal(err)
	}
	return ids
}

func BenchmarkMutate(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		for _, par := range []int{1, 8, 64} {
			// RunParallel starts par × GOMAXPROCS goroutines.
			b.Run(fmt.Sprintf("assets=%d/writers=%d", n, par*runtime.GOMAXPROCS(0)), func(b *testing.B) {
				path := filepath.Join(b.TempDir(), "tags.json")
				ids := populate(b, path, n)
				s, err := Open(path, Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				var seq atomic.Int64
				b.SetParallelism(par) // par × GOMAXPROCS goroutines
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						// Pass k over the ids adds the tag when k is even and
						// removes it when odd, so every call changes the file.
						i := int(seq.Add(1) - 1)
						id := ids[i%len(ids)]
						var err error
						if (i/len(ids))%2 == 0 {
							_, err = s.Add(id, Entry{}, []string{"bench"})
						} else {
							_, err = s.Remove(id, Entry{}, []string{"bench"})
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mutations/s")
			})
		}
	}
}

func BenchmarkLoad100k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "tags.json")
	populate(b, path, 100_000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}

// BenchmarkReloadAfterEdit measures from an external save to the new state
// being served, debounce included.
func BenchmarkReloadAfterEdit100k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "tags.json")
	ids := populate(b, path, 100_000)
	reloaded := make(chan error, 1)
	s, err := Open(path, Options{OnReload: func(err error) { reloaded <- err }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data, _ := os.ReadFile(path)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		m, _ := Parse(data)
		m[ids[0]] = Entry{Tags: []string{fmt.Sprint("edit-", i)}}
		doc := Encode(m)
		b.StartTimer()
		if err := os.WriteFile(path+".new", doc, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			b.Fatal(err)
		}
		if err := <-reloaded; err != nil {
			b.Fatal(err)
		}
	}
}
