package assetapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// BenchmarkListPage answers one page of 50 from 2,000 assets, in memory:
// what a listing costs comfyshim beyond the network.
func BenchmarkListPage(b *testing.B) {
	d := newComfyDir(b)
	for i := range 2000 {
		d.add(fmt.Sprintf("output/img_%05d.png", i), "x", i%60)
	}
	roots := []assets.Root{{Name: "output", Dir: d.Folder("output")}}
	lib, err := assets.Open(roots, d.TagsFile(), assets.Options{FilesDebounce: 20 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer lib.Close()
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	Mount(e, lib, Options{MaxBody: 1 << 20})
	req := httptest.NewRequest(http.MethodGet, "/api/assets?include_tags=output&limit=50", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
