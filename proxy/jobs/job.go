package jobs

import (
	"encoding/json"
	"strings"
)

// Job statuses as ComfyUI's /api/jobs and Cloud's /api/jobs group them.
const (
	StatusPending    = "pending"
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
	StatusCancelled  = "cancelled"
)

var allStatuses = []string{StatusPending, StatusInProgress, StatusCompleted, StatusFailed, StatusCancelled}

// Job is one prompt as the job API reports it, whichever ComfyUI route it
// was read from. Times are Unix milliseconds (0: unknown), as ComfyUI and
// the web app that runs on both ComfyUI and Cloud use them.
type Job struct {
	ID            string
	Status        string
	Priority      any
	CreateTime    int64
	StartTime     int64
	EndTime       int64
	WorkflowID    string
	OutputsCount  int
	PreviewOutput map[string]any
	Error         map[string]any // ComfyUI's execution_error message

	// Only in a single job's details.
	Detail          bool
	Outputs         map[string]any
	ExecutionStatus map[string]any
	ExecutionMeta   map[string]any
	Workflow        map[string]any
}

// terminal says whether the job has finished one way or another.
func (j Job) terminal() bool {
	return j.Status == StatusCompleted || j.Status == StatusFailed || j.Status == StatusCancelled
}

// CloudState is the raw state Cloud's /api/job/{id}/status answers (its
// scripts compare against these, not the spec's enum): a prompt waiting in
// ComfyUI's queue is "queued_waiting", a running one "executing", then
// "success", "error" (an execution error) or "cancelled" (interrupted, or
// deleted from the queue).
func (j Job) CloudState() string {
	switch j.Status {
	case StatusPending:
		return "queued_waiting"
	case StatusInProgress:
		return "executing"
	case StatusCompleted:
		return "success"
	case StatusFailed:
		return "error"
	default:
		return "cancelled"
	}
}

// ErrorMessage is a one-line account of a failure, or "".
func (j Job) ErrorMessage() string {
	switch j.Status {
	case StatusFailed:
		if j.Error == nil {
			return "the prompt failed"
		}
		msg, _ := j.Error["exception_message"].(string)
		typ, _ := j.Error["exception_type"].(string)
		node, _ := j.Error["node_type"].(string)
		msg = strings.TrimSpace(msg)
		if typ != "" {
			msg = typ + ": " + msg
		}
		if node != "" {
			msg = node + ": " + msg
		}
		return msg
	case StatusCancelled:
		return "the prompt was cancelled"
	}
	return ""
}

// historyItem is one entry of ComfyUI's /history.
type historyItem struct {
	Prompt  []json.RawMessage `json:"prompt"`
	Outputs map[string]any    `json:"outputs"`
	Status  map[string]any    `json:"status"`
	Meta    map[string]any    `json:"meta"`
}

// fromHistory reads a finished prompt from /history, as ComfyUI's
// comfy_execution/jobs.py does.
func fromHistory(id string, h historyItem, detail bool) Job {
	j := Job{ID: id, Status: StatusCompleted, Detail: detail}
	var prompt map[string]any
	var extra map[string]any
	if len(h.Prompt) >= 4 {
		_ = json.Unmarshal(h.Prompt[0], &j.Priority)
		_ = json.Unmarshal(h.Prompt[2], &prompt)
		_ = json.Unmarshal(h.Prompt[3], &extra)
	}
	j.CreateTime, j.WorkflowID = extraMetadata(extra)
	statusStr, _ := h.Status["status_str"].(string)
	if statusStr == "error" {
		j.Status = StatusFailed
	}
	msgs, _ := h.Status["messages"].([]any)
	for _, m := range msgs {
		pair, ok := m.([]any)
		if !ok || len(pair) < 2 {
			continue
		}
		name, _ := pair[0].(string)
		data, ok := pair[1].(map[string]any)
		if !ok {
			continue
		}
		switch name {
		case "execution_start":
			j.StartTime = toInt64(data["timestamp"])
		case "execution_success", "execution_error", "execution_interrupted":
			j.EndTime = toInt64(data["timestamp"])
			if name == "execution_error" {
				j.Error = data
			}
			if name == "execution_interrupted" {
				j.Status = StatusCancelled
			}
		}
	}
	j.OutputsCount, j.PreviewOutput = outputsSummary(h.Outputs)
	if detail {
		j.Outputs = h.Outputs
		j.ExecutionStatus = h.Status
		j.ExecutionMeta = h.Meta
		j.Workflow = map[string]any{"prompt": prompt, "extra_data": extra}
	}
	return j
}

// fromQueueTuple reads a running or queued prompt from /queue: number, id,
// prompt, extra_data, outputs to execute.
func fromQueueTuple(t []json.RawMessage, status string) (Job, bool) {
	if len(t) < 4 {
		return Job{}, false
	}
	j := Job{Status: status}
	if json.Unmarshal(t[1], &j.ID) != nil || j.ID == "" {
		return Job{}, false
	}
	_ = json.Unmarshal(t[0], &j.Priority)
	var extra map[string]any
	_ = json.Unmarshal(t[3], &extra)
	j.CreateTime, j.WorkflowID = extraMetadata(extra)
	return j, true
}

// fromJobsAPI reads a job from ComfyUI's own /api/jobs (0.33+). Releases
// before "cancelled" existed report an interrupted prompt as failed; its
// messages tell.
func fromJobsAPI(raw map[string]any) Job {
	j := Job{Priority: raw["priority"]}
	j.ID, _ = raw["id"].(string)
	j.Status, _ = raw["status"].(string)
	j.CreateTime = toInt64(raw["create_time"])
	j.StartTime = toInt64(raw["execution_start_time"])
	j.EndTime = toInt64(raw["execution_end_time"])
	j.WorkflowID, _ = raw["workflow_id"].(string)
	j.OutputsCount = int(toInt64(raw["outputs_count"]))
	j.PreviewOutput, _ = raw["preview_output"].(map[string]any)
	j.Error, _ = raw["execution_error"].(map[string]any)
	j.Outputs, j.Detail = raw["outputs"].(map[string]any)
	j.ExecutionStatus, _ = raw["execution_status"].(map[string]any)
	j.ExecutionMeta, _ = raw["execution_meta"].(map[string]any)
	j.Workflow, _ = raw["workflow"].(map[string]any)
	if j.Status == StatusFailed && j.Error == nil && j.ExecutionStatus != nil {
		msgs, _ := j.ExecutionStatus["messages"].([]any)
		for _, m := range msgs {
			if pair, ok := m.([]any); ok && len(pair) > 0 && pair[0] == "execution_interrupted" {
				j.Status = StatusCancelled
			}
		}
	}
	return j
}

func extraMetadata(extra map[string]any) (create int64, workflowID string) {
	create = toInt64(extra["create_time"])
	if info, ok := extra["extra_pnginfo"].(map[string]any); ok {
		if wf, ok := info["workflow"].(map[string]any); ok {
			workflowID, _ = wf["id"].(string)
		}
	}
	return create, workflowID
}

func toInt64(v any) int64 {
	switch n := v.(type) {
	case float64:
		return int64(n)
	case int64:
		return n
	case json.Number:
		i, _ := n.Int64()
		return i
	}
	return 0
}

// outputsSummary counts output files and picks the one to preview, as
// ComfyUI does: an "output" image, video or audio first, else any such.
func outputsSummary(outputs map[string]any) (int, map[string]any) {
	count := 0
	var preview, fallback map[string]any
	for _, nodeID := range sortedKeys(outputs) {
		byType, ok := outputs[nodeID].(map[string]any)
		if !ok {
			continue
		}
		for _, mediaType := range sortedKeys(byType) {
			items, ok := byType[mediaType].([]any)
			if mediaType == "animated" || !ok {
				continue
			}
			for _, it := range items {
				item, ok := it.(map[string]any)
				if !ok {
					continue
				}
				count++
				if preview == nil && previewable(mediaType, item) {
					p := map[string]any{"nodeId": nodeID, "mediaType": mediaType}
					for k, v := range item {
						p[k] = v
					}
					if item["type"] == "output" {
						preview = p
					} else if fallback == nil {
						fallback = p
					}
				}
			}
		}
	}
	if preview == nil {
		preview = fallback
	}
	return count, preview
}

func previewable(mediaType string, item map[string]any) bool {
	switch mediaType {
	case "images", "video", "audio":
		return true
	}
	if f, _ := item["format"].(string); strings.HasPrefix(f, "video/") || strings.HasPrefix(f, "audio/") {
		return true
	}
	name, _ := item["filename"].(string)
	name = strings.ToLower(name)
	for _, ext := range []string{".obj", ".fbx", ".gltf", ".glb"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// mediaKind is the Cloud output_type a preview counts as: image, video,
// audio or "".
func mediaKind(preview map[string]any) string {
	if preview == nil {
		return ""
	}
	mt, _ := preview["mediaType"].(string)
	f, _ := preview["format"].(string)
	switch {
	case strings.HasPrefix(f, "video/") || mt == "video":
		return "video"
	case strings.HasPrefix(f, "audio/") || mt == "audio":
		return "audio"
	case mt == "images":
		return "image"
	}
	return ""
}
