package proxy

import (
	"io"
	"testing"
)

// BenchmarkForwardSmallJSON measures a small forwarded GET end to end over
// loopback; compare with BenchmarkDirectSmallJSON from the same run.
func BenchmarkForwardSmallJSON(b *testing.B) {
	benchGet(b, true)
}

func BenchmarkDirectSmallJSON(b *testing.B) {
	benchGet(b, false)
}

func benchGet(b *testing.B, viaShim bool) {
	_, ts := startUpstream(b)
	url := ts.URL
	if viaShim {
		url = startShim(b, testConfig(b, ts.URL)).URL
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := testClient.Get(url + "/api/system_stats")
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
