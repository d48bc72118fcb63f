// Command driver runs comfyshim's benchmark scenarios that wrk cannot
// (websockets, streamed downloads, memory, tag mutations), makes the 100k
// asset folder, and turns result lines into bench/RESULTS.md.
//
// Every scenario prints JSON lines: {"scenario","target","metric","unit","value"}.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/comfyshim/comfyshim/tagstore"
	"github.com/comfyshim/comfyshim/tagstore/catalog"
)

type result struct {
	Scenario string  `json:"scenario"`
	Target   string  `json:"target"`
	Metric   string  `json:"metric"`
	Unit     string  `json:"unit"`
	Value    float64 `json:"value"`
}

func emit(r result) {
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: driver ws|download|rss|mutate|fsync|mkassets|upload|streams|wrk2json|emit|report ...")
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	url := fs.String("url", "", "target URL")
	target := fs.String("target", "", "target name for the results")
	dur := fs.Duration("dur", 3*time.Second, "duration")
	size := fs.Int("size", 64, "message size (ws)")
	binary := fs.Bool("binary", false, "binary frames (ws)")
	conns := fs.Int("conns", 1, "concurrent clients")
	pid := fs.Int("pid", 0, "process whose RSS is sampled")
	dir := fs.String("dir", "", "folder (mkassets)")
	n := fs.Int("n", 100000, "number of assets (mkassets)")
	scenario := fs.String("scenario", "", "scenario name")
	cpuTicks := fs.Int64("cpu-ticks", -1, "wrk2json: CPU clock ticks the target used during the run")
	syscalls := fs.Int64("syscalls", -1, "wrk2json: read and write system calls the target made during the run")
	metric := fs.String("metric", "", "emit: metric name")
	unit := fs.String("unit", "", "emit: unit")
	value := fs.Float64("value", 0, "emit: value")
	api := fs.String("api", "v2", "upload: through the Cloud asset API (v1) or Comfy API v2 (v2)")
	_ = fs.Parse(args)
	var err error
	switch cmd {
	case "ws":
		err = wsBench(*url, *target, *size, *binary, *dur)
	case "download":
		err = download(*url, *target, *conns, *dur)
	case "rss":
		err = rss(*url, *target, *scenario, *pid)
	case "mutate":
		err = mutate(*url, *target, *scenario, *conns, *dur, *n)
	case "fsync":
		err = fsyncLoop(*dir, *target, *scenario, *dur)
	case "emit":
		emit(result{*scenario, *target, *metric, *unit, *value})
	case "upload":
		err = upload(*url, *target, *scenario, *api, *size)
	case "streams":
		err = streams(*url, *target, *pid, *n)
	case "mkassets":
		err = mkassets(*dir, *n)
	case "wrk2json":
		err = wrk2json(os.Stdin, *scenario, *target, *cpuTicks, *syscalls)
	case "report":
		err = report(fs.Args())
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
}

// wsBench sends a message and waits for its echo, sequentially, for dur.
func wsBench(url, target string, size int, binary bool, dur time.Duration) error {
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, _, err := conn.ReadMessage(); err != nil { // status
		return err
	}
	kind := websocket.TextMessage
	msg := []byte(`{"type":"echo","data":"` + strings.Repeat("x", max(size-26, 0)) + `"}`)
	name := "ws_text_small"
	if binary {
		kind, msg, name = websocket.BinaryMessage, bytes.Repeat([]byte{7}, size), fmt.Sprintf("ws_binary_%dKiB", size>>10)
	}
	var rtts []time.Duration
	end := time.Now().Add(dur)
	start := time.Now()
	for time.Now().Before(end) {
		t0 := time.Now()
		if err := conn.WriteMessage(kind, msg); err != nil {
			return err
		}
		if _, _, err := conn.ReadMessage(); err != nil {
			return err
		}
		rtts = append(rtts, time.Since(t0))
	}
	elapsed := time.Since(start).Seconds()
	slices.Sort(rtts)
	emit(result{name, target, "rtt_p50", "us", float64(rtts[len(rtts)/2].Microseconds())})
	emit(result{name, target, "rtt_p99", "us", float64(rtts[len(rtts)*99/100].Microseconds())})
	emit(result{name, target, "round_trips_per_s", "1/s", float64(len(rtts)) / elapsed})
	emit(result{name, target, "throughput", "MiB/s", float64(len(rtts)*len(msg)*2) / elapsed / (1 << 20)})
	return nil
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}}

// loadFor runs call in a loop from conns clients until dur has passed and
// returns the elapsed seconds, or the first error any client met.
func loadFor(conns int, dur time.Duration, call func() error) (float64, error) {
	var firstErr atomic.Pointer[error] // errors differ in type: atomic.Value would panic
	end := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if err := call(); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, *e
	}
	return time.Since(start).Seconds(), nil
}

// download fetches url repeatedly from conns clients for dur.
func download(url, target string, conns int, dur time.Duration) error {
	var total atomic.Int64
	elapsed, err := loadFor(conns, dur, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		total.Add(n)
		return nil
	})
	if err != nil {
		return err
	}
	emit(result{"view_1MiB", target, "throughput", "MiB/s", float64(total.Load()) / elapsed / (1 << 20)})
	return nil
}

// rss downloads url once while sampling pid's resident memory.
func rss(url, target, scenario string, pid int) error {
	stop := make(chan struct{})
	peak := make(chan int64)
	go func() {
		var p int64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if v := readRSS(pid); v > p {
				p = v
			}
			select {
			case <-stop:
				peak <- p
				return
			case <-t.C:
			}
		}
	}()
	if url != "" {
		resp, err := client.Get(url)
		if err != nil {
			close(stop)
			<-peak
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			close(stop)
			<-peak
			return err
		}
	} else {
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	emit(result{scenario, target, "peak_rss", "MiB", float64(<-peak) / (1 << 20)})
	return nil
}

func readRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// mutate adds and removes a tag on the n benchmark assets from conns
// clients for dur; each acknowledged call is durable.
func mutate(base, target, scenario string, conns int, dur time.Duration, n int) error {
	var done, seq atomic.Int64
	// A tag of this invocation's own, so every call changes something and
	// costs a durable write (a repeated add would be a no-op).
	body := fmt.Sprintf(`{"tags":["bench-%d"]}`, time.Now().UnixNano())
	elapsed, err := loadFor(conns, dur, func() error {
		k := seq.Add(1)
		id := catalog.ID("output", assetRel(int(k)%n))
		method := "POST"
		if (k/int64(n))%2 == 1 {
			method = "DELETE"
		}
		req, _ := http.NewRequest(method, base+"/api/assets/"+id+"/tags", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s %s: %s", method, id, resp.Status)
		}
		done.Add(1)
		return nil
	})
	if err != nil {
		return err
	}
	if scenario == "" {
		scenario = fmt.Sprintf("tag_mutations_%dclients", conns)
	}
	emit(result{scenario, target, "mutations_per_s", "1/s", float64(done.Load()) / elapsed})
	return nil
}

// fsyncLoop is the disk's floor for one writer's durable commits: append a
// small record to a file and fdatasync it, in a loop, for dur.
func fsyncLoop(dir, target, scenario string, dur time.Duration) error {
	f, err := os.CreateTemp(dir, "fsync-anchor-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	rec := []byte(`{"id":"0b9e5f4c-1d2a-4c3b-8e7f-112233445566","tags":["bench"]}` + "\n")
	n := 0
	start := time.Now()
	for time.Since(start) < dur {
		if _, err := f.Write(rec); err != nil {
			return err
		}
		if err := fdatasync(f); err != nil {
			return err
		}
		n++
	}
	emit(result{scenario, target, "mutations_per_s", "1/s", float64(n) / time.Since(start).Seconds()})
	return nil
}

func assetRel(i int) string { return fmt.Sprintf("batch_%03d/ComfyUI_%06d_.png", i/1000, i) }

// mkassets makes n small files under dir/output in folders of 1000, and a
// tags file in which every one of them has been tagged: the largest sidecar
// those assets can have.
func mkassets(dir string, n int) error {
	updated := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	assets := make(map[string]tagstore.Entry, n)
	for i := 0; i < n; i++ {
		tags := []string{fmt.Sprintf("batch:%d", i/1000), "output", fmt.Sprintf("seed:%d", i%97), fmt.Sprintf("style:%d", i%13)}
		if i%3 == 0 {
			tags = append(tags, "favorite")
		}
		slices.Sort(tags)
		assets[catalog.ID("output", assetRel(i))] = tagstore.Entry{Path: "output/" + assetRel(i), Tags: tags, UpdatedAt: updated}
	}
	data := tagstore.Encode(assets)
	if err := os.MkdirAll(filepath.Join(dir, "user"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "user", "comfyshim-tags.json"), data, 0o644); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, "output", filepath.FromSlash(assetRel(i)))
		if i%1000 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(p, []byte{byte(i)}, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// wrk2json turns wrk --latency output into result lines, with the CPU
// time and system calls per request when the target's were measured.
func wrk2json(r io.Reader, scenario, target string, cpuTicks, syscalls int64) error {
	sc := bufio.NewScanner(r)
	found := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			reqs, _ := strconv.ParseFloat(f[0], 64)
			if reqs > 0 && cpuTicks >= 0 {
				emit(result{scenario, target, "cpu_per_request", "us", float64(cpuTicks) * 1e6 / clockTicks / reqs})
			}
			if reqs > 0 && syscalls >= 0 {
				emit(result{scenario, target, "syscalls_per_request", "n", float64(syscalls) / reqs})
			}
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, _ := strconv.ParseFloat(f[1], 64)
			emit(result{scenario, target, "requests_per_s", "1/s", v})
			found = true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			emit(result{scenario, target, "latency_p" + strings.TrimSuffix(f[0], "%"), "us", wrkDuration(f[1])})
		case len(f) >= 4 && f[0] == "Non-2xx":
			return fmt.Errorf("%s %s: wrk saw non-2xx responses", scenario, target)
		}
	}
	if !found {
		return fmt.Errorf("%s %s: no wrk result", scenario, target)
	}
	return nil
}

func wrkDuration(s string) float64 {
	for _, u := range []struct {
		suffix string
		us     float64
	}{{"us", 1}, {"ms", 1e3}, {"s", 1e6}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f * u.us
		}
	}
	return 0
}

// report reads result lines from files and prints a markdown table of
// medians (min–max) per scenario, metric and target, with comfyshim's
// ratios to direct and to every peer measured in the same row group.
func report(files []string) error {
	type key struct{ scenario, metric, target string }
	vals := map[key][]float64{}
	units := map[string]string{}
	var order []key
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			var r result
			if json.Unmarshal([]byte(line), &r) != nil || r.Scenario == "" {
				continue
			}
			k := key{r.Scenario, r.Metric, r.Target}
			if _, ok := vals[k]; !ok {
				order = append(order, k)
			}
			vals[k] = append(vals[k], r.Value)
			units[r.Metric] = r.Unit
		}
	}
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		sort.Float64s(s)
		if len(s)%2 == 1 {
			return s[len(s)/2]
		}
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	// Group rows by scenario (in the order first seen), then metric, then target.
	first := map[string]int{}
	for i, k := range order {
		if _, ok := first[k.scenario]; !ok {
			first[k.scenario] = i
		}
	}
	rank := map[string]int{"direct": 0, "comfyshim": 1, "caddy": 2, "nginx": 3, "fdatasync": 4, "sqlite_wal_full": 5, "comfyshim_v1": 6}
	sort.SliceStable(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if a.scenario != b.scenario {
			return first[a.scenario] < first[b.scenario]
		}
		if a.metric != b.metric {
			return a.metric < b.metric
		}
		return rank[a.target] < rank[b.target]
	})
	fmt.Println("| scenario | metric | target | median | min – max | runs | vs direct | comfyshim vs others |")
	fmt.Println("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
	for _, k := range order {
		v := vals[k]
		m := median(v)
		ratio := func(other string) string {
			o, ok := vals[key{k.scenario, k.metric, other}]
			if !ok || other == k.target || median(o) == 0 {
				return ""
			}
			return fmt.Sprintf("%.2fx", m/median(o))
		}
		// For comfyshim's rows: its median over each peer's in this row
		// group (for latency, memory and CPU lower is better).
		var vs []string
		if k.target == "comfyshim" {
			for _, other := range []string{"caddy", "nginx", "fdatasync", "sqlite_wal_full", "comfyshim_v1"} {
				if r := ratio(other); r != "" {
					vs = append(vs, r+" "+other)
				}
			}
		}
		fmt.Printf("| %s | %s (%s) | %s | %s | %s – %s | %d | %s | %s |\n",
			k.scenario, k.metric, units[k.metric], k.target, num(m), num(slices.Min(v)), num(slices.Max(v)), len(v), ratio("direct"), strings.Join(vs, ", "))
	}
	return nil
}

// num prints a value with the precision it deserves.
func num(v float64) string {
	if v != 0 && v < 10 && v > -10 {
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
