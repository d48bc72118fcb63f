package apiv2

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"testing"
)

func msg(typ string, data map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "data": data})
	return b
}

func previewFrame(kind uint32, meta []byte, img []byte) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, kind)
	if kind == 4 {
		binary.BigEndian.PutUint32(b[4:], uint32(len(meta)))
		b = append(b, meta...)
	} else {
		binary.BigEndian.PutUint32(b[4:], 2) // PNG
	}
	return append(b, img...)
}

// TestLiveProgress follows one job through ComfyUI's messages as they
// arrive for a four-node workflow with one cached node.
func TestLiveProgress(t *testing.T) {
	l := newLive()
	id := "p1"
	l.register(id, map[string]string{"1": "Loader", "2": "KSampler", "3": "VAEDecode", "4": "SaveImage"})
	wake, stop := l.subscribe(id, nil)
	defer stop()
	steps := []struct {
		msg       []byte
		value     float64
		done      int
		current   string
		woken     bool
		nOutputs  int
		ended     string
		settled   bool
		lastMsg   string
		preview   string // content type of the latest preview
		previewOf string
	}{
		{msg: msg("execution_start", map[string]any{"prompt_id": id}), woken: true},
		{msg: msg("execution_cached", map[string]any{"prompt_id": id, "nodes": []string{"1"}}), value: 0.25, done: 1, woken: true},
		{msg: msg("executing", map[string]any{"prompt_id": id, "node": "2"}), value: 0.25, done: 1, current: "2", woken: true},
		{msg: msg("progress", map[string]any{"prompt_id": id, "node": "2", "value": 10, "max": 20}), value: 0.375, done: 1, current: "2", woken: true},
		{msg: previewFrame(1, nil, []byte("png")), value: 0.375, done: 1, current: "2", woken: true, preview: "image/png", previewOf: "2"},
		{msg: msg("status", map[string]any{"status": map[string]any{}}), value: 0.375, done: 1, current: "2", preview: "image/png", previewOf: "2"},
		{msg: msg("progress", map[string]any{"prompt_id": "someone-else", "node": "9", "value": 1, "max": 2}), value: 0.375, done: 1, current: "2", preview: "image/png", previewOf: "2"},
		{msg: msg("executing", map[string]any{"prompt_id": id, "node": "4"}), value: 0.5, done: 2, current: "4", woken: true, preview: "image/png", previewOf: "2"},
		{msg: previewFrame(4, []byte(`{"prompt_id":"p1","node_id":"4","image_type":"image/webp"}`), []byte("webp")), value: 0.5, done: 2, current: "4", woken: true, preview: "image/webp", previewOf: "4"},
		{msg: msg("executed", map[string]any{"prompt_id": id, "node": "4", "output": map[string]any{"images": []map[string]string{{"filename": "a.png", "subfolder": "x", "type": "output"}, {"filename": "b.png", "subfolder": "", "type": "temp"}}, "text": []string{"hi"}}}),
			value: 0.75, done: 3, woken: true, nOutputs: 2, preview: "image/webp", previewOf: "4"},
		{msg: msg("execution_success", map[string]any{"prompt_id": id}), value: 1, done: 4, woken: true, nOutputs: 2, ended: statusSucceeded, preview: "image/webp", previewOf: "4"},
		{msg: msg("executing", map[string]any{"prompt_id": id, "node": nil}), value: 1, done: 4, woken: true, nOutputs: 2, ended: statusSucceeded, settled: true, preview: "image/webp", previewOf: "4"},
	}
	for i, s := range steps {
		if len(s.msg) > 0 && s.msg[0] == '{' {
			l.observeText(s.msg)
		} else {
			l.observeBinary(s.msg)
		}
		woken := false
		select {
		case <-wake:
			woken = true
		default:
		}
		v := l.view(id)
		p := v.progress
		cur := ""
		if p != nil && p.CurrentNode != nil {
			cur = *p.CurrentNode
		}
		switch {
		case woken != s.woken:
			t.Fatalf("step %d: woken %v", i, woken)
		case p == nil || p.Value != s.value || p.NodesDone != s.done || p.NodesTotal != 4 || cur != s.current:
			t.Fatalf("step %d: progress %+v (current %q), want %v %d %q", i, p, cur, s.value, s.done, s.current)
		case len(v.outputs) != s.nOutputs || v.ended != s.ended || v.settledAt.IsZero() == s.settled:
			t.Fatalf("step %d: outputs %v ended %q settled %v", i, v.outputs, v.ended, v.settledAt)
		case s.preview != "" && (v.preview == nil || v.preview.contentType != s.preview || v.preview.node != s.previewOf):
			t.Fatalf("step %d: preview %+v", i, v.preview)
		}
	}
	v := l.view(id)
	if o := v.outputs; o[0].Rel != "x/a.png" || o[0].Root != "output" || o[1].Root != "temp" || o[0].NodeID != "4" || o[0].Kind != "images" {
		t.Fatalf("outputs %+v", o)
	}
	if len(v.logs) < 2 || v.logs[len(v.logs)-1].message != "execution finished" {
		t.Fatalf("logs %+v", v.logs)
	}
}

func TestExecutionError(t *testing.T) {
	e := executionError(json.RawMessage(`{"node_id":"7","node_type":"KSampler","exception_type":"torch.OutOfMemoryError","exception_message":"CUDA out of memory ","traceback":["a\n","b\n"]}`))
	if e.Code != "node_execution_error" || e.Message != "torch.OutOfMemoryError: CUDA out of memory" || *e.NodeID != "7" || *e.ClassType != "KSampler" || *e.Traceback != "a\nb\n" {
		t.Fatalf("%+v", e)
	}
	if e := executionError(json.RawMessage(`null`)); e.Message == "" || e.NodeID != nil {
		t.Fatalf("%+v", e)
	}
}

// FuzzObserve: no message ComfyUI could send panics or breaks the state a
// stream reads.
func FuzzObserve(f *testing.F) {
	f.Add(msg("executed", map[string]any{"prompt_id": "p", "node": "1", "output": map[string]any{"images": []map[string]string{{"filename": "a"}}}}), false)
	f.Add(previewFrame(4, []byte(`{"prompt_id":"p"}`), []byte("x")), true)
	f.Add([]byte{0, 0, 0, 4, 255, 255, 255, 255}, true)
	f.Fuzz(func(t *testing.T, data []byte, binary bool) {
		l := newLive()
		l.register("p", map[string]string{"1": "A"})
		if binary {
			l.observeBinary(data)
		} else {
			l.observeText(data)
		}
		v := l.view("p")
		if v.progress != nil && (v.progress.Value < 0 || v.progress.Value > 1) {
			t.Fatalf("progress %v", v.progress.Value)
		}
		for _, o := range v.outputs {
			if o.Rel == "" || (o.Root != "output" && o.Root != "temp" && o.Root != "input") {
				t.Fatalf("output %+v", o)
			}
		}
	})
}

// Jobs ending (their record written in the background) while the API
// closes: Close waits for every record started and none starts after it
// (under -race, starting one could race Close's wait).
func TestObserveRacingClose(t *testing.T) {
	for round := 0; round < 20; round++ {
		a, err := New(Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler), Transport: http.DefaultTransport,
			Upstream: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}})
		if err != nil {
			t.Fatal(err)
		}
		const writers, each = 4, 300
		var started, done sync.WaitGroup
		started.Add(writers)
		for w := range writers {
			ids := make([]string, each)
			for i := range ids {
				ids[i] = fmt.Sprintf("job-%d-%d-%d", round, w, i)
				a.live.register(ids[i], map[string]string{"1": "SaveImage"})
			}
			done.Go(func() {
				started.Done()
				for _, id := range ids {
					a.Observe(false, []byte(`{"type":"executing","data":{"prompt_id":"`+id+`","node":null}}`))
				}
			})
		}
		started.Wait()
		a.Close()
		done.Wait()
		a.Close() // again: a no-op
	}
}
