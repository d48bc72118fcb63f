// Command comfyshim serves the Comfy Cloud asset tag API in front of a
// self-hosted ComfyUI and forwards everything else to it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/comfyshim/comfyshim/config"
	"github.com/comfyshim/comfyshim/proxy"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(args, getenv, stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "comfyshim:", err)
		return 2
	}
	if cfg.Version {
		fmt.Fprintln(stdout, "comfyshim", version())
		return 0
	}
	if cfg.CheckOnly {
		for _, kv := range cfg.Effective() {
			fmt.Fprintf(stdout, "%s: %s\n", kv[0], kv[1])
		}
		errs := proxy.Check(cfg)
		for _, err := range errs {
			fmt.Fprintln(stderr, "comfyshim: check:", err)
		}
		if len(errs) > 0 {
			return 1
		}
		return 0
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel(cfg.LogLevel)}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := proxy.New(cfg, proxy.Options{Logger: log})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	log.Info("comfyshim listening", "addr", ln.Addr().String(), "upstream", cfg.Upstream.String())
	if err := srv.Serve(ctx, ln); err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// Version is set at build time with -ldflags "-X main.Version=v1.2.3".
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version + " (" + bi.GoVersion + ")"
	}
	return "unknown"
}

func logLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}
