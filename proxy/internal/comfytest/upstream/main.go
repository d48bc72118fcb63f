// Command upstream runs the fake ComfyUI for benchmarks.
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/comfyshim/comfyshim/proxy/internal/comfytest"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:18188", "address")
	flag.Parse()
	up := comfytest.New()
	up.Quiet = true
	log.Fatal((&http.Server{Addr: *addr, Handler: up}).ListenAndServe())
}
