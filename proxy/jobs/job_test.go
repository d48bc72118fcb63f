package jobs

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

func history(t *testing.T, js string) historyItem {
	t.Helper()
	var h historyItem
	if err := json.Unmarshal([]byte(js), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

const tuple = `[3, "p1", {"9": {"class_type": "SaveImage"}}, {"create_time": 1700000000000, "extra_pnginfo": {"workflow": {"id": "wf-1"}}}, ["9"]]`

func TestFromHistory(t *testing.T) {
	cases := []struct {
		name, js               string
		status, state, errPart string
		start, end             int64
		count                  int
		preview                string
	}{
		{name: "success",
			js: `{"prompt": ` + tuple + `, "outputs": {"3": {"images": [{"filename": "t.png", "type": "temp"}]}, "9": {"images": [{"filename": "o.png", "type": "output"}], "animated": [false]}},
				"status": {"status_str": "success", "messages": [["execution_start", {"timestamp": 10}], ["execution_success", {"timestamp": 20}]]}}`,
			status: StatusCompleted, state: "success", start: 10, end: 20, count: 2, preview: "o.png"},
		{name: "execution error",
			js: `{"prompt": ` + tuple + `, "outputs": {}, "status": {"status_str": "error", "messages": [["execution_start", {"timestamp": 10}],
				["execution_error", {"timestamp": 30, "node_id": "4", "node_type": "KSampler", "exception_type": "RuntimeError", "exception_message": "out of memory\n"}]]}}`,
			status: StatusFailed, state: "error", start: 10, end: 30, errPart: "KSampler: RuntimeError: out of memory"},
		{name: "interrupted",
			js:     `{"prompt": ` + tuple + `, "status": {"status_str": "error", "messages": [["execution_interrupted", {"timestamp": 40}]]}}`,
			status: StatusCancelled, state: "cancelled", end: 40, errPart: "cancelled"},
		{name: "no status (older ComfyUI)", js: `{"prompt": ` + tuple + `, "outputs": {"9": {"audio": [{"filename": "a.flac", "type": "output"}]}}}`,
			status: StatusCompleted, state: "success", count: 1, preview: "a.flac"},
		{name: "short prompt tuple", js: `{"prompt": [1], "status": {"status_str": "success"}}`, status: StatusCompleted, state: "success"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := fromHistory("p1", history(t, c.js), true)
			if j.Status != c.status || j.CloudState() != c.state || j.StartTime != c.start || j.EndTime != c.end || j.OutputsCount != c.count {
				t.Fatalf("got %+v", j)
			}
			if !strings.Contains(j.ErrorMessage(), c.errPart) || (c.errPart == "") != (j.ErrorMessage() == "") {
				t.Fatalf("error message %q, want one with %q", j.ErrorMessage(), c.errPart)
			}
			name, _ := j.PreviewOutput["filename"].(string)
			if name != c.preview {
				t.Fatalf("preview %v, want %q", j.PreviewOutput, c.preview)
			}
			if strings.HasPrefix(c.js, `{"prompt": [3`) && (j.CreateTime != 1700000000000 || j.WorkflowID != "wf-1") {
				t.Fatalf("metadata: %+v", j)
			}
		})
	}
}

func TestFromJobsAPIReadsInterruptedAsCancelled(t *testing.T) {
	var raw map[string]any
	_ = json.Unmarshal([]byte(`{"id":"p","status":"failed","create_time":5,"outputs":{},"execution_status":{"messages":[["execution_interrupted",{}]]}}`), &raw)
	if j := fromJobsAPI(raw); j.Status != StatusCancelled || !j.Detail || j.CreateTime != 5 {
		t.Fatalf("%+v", j)
	}
	var failed map[string]any
	_ = json.Unmarshal([]byte(`{"id":"p","status":"failed","execution_error":{"exception_message":"x"}}`), &failed)
	if j := fromJobsAPI(failed); j.Status != StatusFailed || j.Detail {
		t.Fatalf("%+v", j)
	}
}

func TestRenderFillsExecutionError(t *testing.T) {
	j := Job{ID: "p", Status: StatusFailed, Error: map[string]any{"node_id": 4.0, "exception_message": "m"}}
	out := render(j, true)
	for _, k := range []string{"node_id", "node_type", "exception_message", "exception_type", "traceback", "current_inputs", "current_outputs"} {
		if _, ok := out.ExecutionError[k]; !ok {
			t.Fatalf("execution_error lacks %s: %v", k, out.ExecutionError)
		}
	}
	if out.ExecutionError["node_id"] != "4" || out.UpdateTime == nil || out.Outputs == nil {
		t.Fatalf("%+v", out)
	}
	if p := render(Job{ID: "q", Status: StatusPending, CreateTime: 1}, false); p.OutputsCount != nil || p.UpdateTime != nil {
		t.Fatalf("a pending job in a list: %+v", p)
	}
}

func TestParseListQuery(t *testing.T) {
	cases := []struct {
		q    string
		ok   bool
		want listQuery
	}{
		{"", true, listQuery{limit: 100}},
		{"status=pending,in_progress&limit=1000&offset=5&sort_by=execution_time&sort_order=asc&output_type=video&workflow_id=w",
			true, listQuery{statuses: []string{"pending", "in_progress"}, limit: 1000, offset: 5, byDuration: true, asc: true, outputType: "video", workflowID: "w"}},
		{"status=completed,", false, listQuery{}},
		{"status=success", false, listQuery{}},
		{"limit=0", false, listQuery{}},
		{"limit=x", false, listQuery{}},
		{"offset=10000001", false, listQuery{}},
		{"sort_by=create_time&sort_by=create_time", false, listQuery{}},
	}
	for _, c := range cases {
		v, _ := url.ParseQuery(c.q)
		got, err := parseListQuery(v)
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v", c.q, err)
			continue
		}
		if c.ok && strings.Join(got.statuses, ",") != strings.Join(c.want.statuses, ",") ||
			c.ok && (got.limit != c.want.limit || got.offset != c.want.offset || got.byDuration != c.want.byDuration || got.asc != c.want.asc || got.outputType != c.want.outputType || got.workflowID != c.want.workflowID) {
			t.Errorf("%q: %+v, want %+v", c.q, got, c.want)
		}
	}
}

func TestRegistryEvictsOldest(t *testing.T) {
	r := NewRegistry(3)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		r.Add(id, Submission{Owner: id})
	}
	for id, want := range map[string]bool{"a": false, "b": false, "c": true, "d": true, "e": true} {
		if _, ok := r.Get(id); ok != want {
			t.Errorf("%s remembered: %v", id, ok)
		}
	}
	r.Add("c", Submission{Owner: "again"})
	if s, _ := r.Get("c"); s.Owner != "again" || len(r.byID) != 3 {
		t.Fatalf("re-adding: %+v, %d entries", s, len(r.byID))
	}
}

func TestOwns(t *testing.T) {
	for _, c := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/api/jobs/a/b", true}, {"HEAD", "/api/job/x", true}, {"GET", "/api/history_v2/a/b", true},
		{"POST", "/api/jobs/x/cancel", false}, {"GET", "/api/jobsx", false}, {"GET", "/jobs/x", false},
	} {
		if Owns(c.method, c.path) != c.want {
			t.Errorf("Owns(%s %s) != %v", c.method, c.path, c.want)
		}
	}
}

// FuzzHistory feeds ComfyUI answers of any shape through the readers and
// the renderer: nothing panics and the result always encodes.
func FuzzHistory(f *testing.F) {
	f.Add([]byte(`{"prompt": ` + tuple + `, "outputs": {"9": {"images": [{"filename": "o.png", "type": "output"}]}}, "status": {"status_str": "error", "messages": [["execution_error", {"node_id": 3}]]}}`))
	f.Add([]byte(`{"prompt": [null, 1, 2, "x"], "outputs": {"9": {"images": [1, "x", null]}}, "status": {"messages": [[1], ["execution_start"], "x"]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var h historyItem
		if json.Unmarshal(data, &h) != nil {
			return
		}
		for _, detail := range []bool{true, false} {
			j := fromHistory("p", h, detail)
			if _, err := json.Marshal(render(j, detail)); err != nil {
				t.Fatal(err)
			}
			_ = j.ErrorMessage()
		}
		var raw map[string]any
		if json.Unmarshal(data, &raw) == nil {
			if _, err := json.Marshal(render(fromJobsAPI(raw), true)); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A prompt that finishes between the reads of the history and of the
// queue is still found (it is in neither when each is read once).
func TestJobFinishingBetweenReadsIsFound(t *testing.T) {
	var mu sync.Mutex
	finished := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/api/jobs/p1":
			w.WriteHeader(http.StatusNotFound) // no /api/jobs: an older ComfyUI
		case "/history/p1":
			if finished {
				_, _ = w.Write([]byte(`{"p1": {"prompt": ` + tuple + `, "outputs": {}, "status": {"status_str": "success", "completed": true, "messages": []}}}`))
			} else {
				_, _ = w.Write([]byte(`{}`))
			}
		case "/queue":
			finished = true // it ran to its end just before the queue was read
			_, _ = w.Write([]byte(`{"queue_running": [], "queue_pending": []}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	j, ok, err := NewSource(u, http.DefaultTransport).Job(context.Background(), "p1")
	if err != nil || !ok || j.ID != "p1" || j.Status != StatusCompleted {
		t.Fatalf("got %+v ok=%v err=%v", j, ok, err)
	}
}
