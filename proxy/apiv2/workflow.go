package apiv2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/comfyshim/comfyshim/tagstore/assets"
)

// submission is a checked POST /api/v2/jobs body.
type submission struct {
	workflow map[string]json.RawMessage // node id -> node, as sent
	raw      json.RawMessage            // the workflow's bytes as sent
	extra    map[string]string          // extra_data: only api_key_comfy_org
	nodes    map[string]string          // node id -> class_type
}

// requestError is a 422 with its code and details.
type requestError struct {
	code    string
	msg     string
	details map[string]any
}

func (e *requestError) Error() string { return e.msg }

func invalid(code, msg string, details map[string]any) *requestError {
	return &requestError{code: code, msg: msg, details: details}
}

// parseSubmission checks a submission: a JSON object with an API-format
// workflow (node id -> {class_type, inputs}) and optionally extra_data with
// only api_key_comfy_org. The fields reserved for later (webhook_url,
// inputs) and any other are refused, as the contract says.
func parseSubmission(body []byte) (*submission, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, invalid(codeInvalidRequest, "the body must be a JSON object {workflow, extra_data?}", nil)
	}
	for k := range top {
		switch k {
		case "workflow", "extra_data":
		case "webhook_url", "inputs":
			return nil, invalid(codeInvalidRequest, fmt.Sprintf("%q is reserved and not supported yet", k), map[string]any{"field": k})
		default:
			return nil, invalid(codeInvalidRequest, fmt.Sprintf("unknown field %q", k), map[string]any{"field": k})
		}
	}
	raw, ok := top["workflow"]
	if !ok {
		return nil, invalid(codeInvalidRequest, `"workflow" is required`, map[string]any{"field": "workflow"})
	}
	s := &submission{raw: raw, nodes: map[string]string{}}
	if err := json.Unmarshal(raw, &s.workflow); err != nil || s.workflow == nil {
		return nil, invalid(codeInvalidRequest, `"workflow" must be a JSON object (the API-format graph)`, map[string]any{"field": "workflow"})
	}
	if isUIFormat(s.workflow) {
		return nil, invalid(codeWorkflowFormatUI, "this is a UI-format workflow (nodes/links); submit the API format (ComfyUI's Export (API))", nil)
	}
	if len(s.workflow) == 0 {
		return nil, invalid(codeInvalidWorkflow, "the workflow has no nodes", map[string]any{"node_errors": map[string]any{}})
	}
	bad := map[string]any{}
	for id, n := range s.workflow {
		var node struct {
			ClassType string          `json:"class_type"`
			Inputs    json.RawMessage `json:"inputs"`
		}
		var inputs map[string]json.RawMessage
		if json.Unmarshal(n, &node) != nil || node.ClassType == "" ||
			(len(node.Inputs) > 0 && string(node.Inputs) != "null" && json.Unmarshal(node.Inputs, &inputs) != nil) {
			bad[id] = []map[string]any{{"field": "class_type", "reason": "malformed_node", "message": "a node is {class_type, inputs}"}}
			continue
		}
		s.nodes[id] = node.ClassType
	}
	if len(bad) > 0 {
		return nil, invalid(codeInvalidWorkflow, "the workflow has malformed nodes", map[string]any{"node_errors": bad})
	}
	if ed, ok := top["extra_data"]; ok && string(ed) != "null" {
		if err := json.Unmarshal(ed, &s.extra); err != nil {
			return nil, invalid(codeInvalidRequest, `"extra_data" may only hold "api_key_comfy_org" (a string)`, map[string]any{"field": "extra_data"})
		}
		for k := range s.extra {
			if k != "api_key_comfy_org" {
				return nil, invalid(codeInvalidRequest, fmt.Sprintf("extra_data field %q is not accepted", k), map[string]any{"field": "extra_data." + k})
			}
		}
	}
	return s, nil
}

// isUIFormat recognises the web app's saved workflow (nodes and links
// arrays) sent where the API format belongs.
func isUIFormat(wf map[string]json.RawMessage) bool {
	n, okN := wf["nodes"]
	l, okL := wf["links"]
	return okN && okL && bytes.HasPrefix(bytes.TrimSpace(n), []byte("[")) && bytes.HasPrefix(bytes.TrimSpace(l), []byte("["))
}

// resolveAssets replaces every core/ASSET reference among the nodes'
// inputs ({"__type": "core/ASSET", "info": {"id": ...}}) with the file
// name ComfyUI expects for it, and returns the workflow to send.
func resolveAssets(s *submission, lib *assets.Library) (json.RawMessage, error) {
	changed := false
	out := make(map[string]json.RawMessage, len(s.workflow))
	ids := make([]string, 0, len(s.workflow))
	for id := range s.workflow {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		var node map[string]json.RawMessage
		_ = json.Unmarshal(s.workflow[id], &node)
		var inputs map[string]json.RawMessage
		_ = json.Unmarshal(node["inputs"], &inputs)
		nodeChanged := false
		for name, v := range inputs {
			if !bytes.Contains(v, []byte("core/ASSET")) {
				continue
			}
			var ref struct {
				Type string `json:"__type"`
				Info struct {
					ID string `json:"id"`
				} `json:"info"`
			}
			if json.Unmarshal(v, &ref) != nil || ref.Type != "core/ASSET" {
				continue
			}
			name2, err := loaderName(lib, ref.Info.ID)
			if err != nil {
				return nil, invalid(codeMissingAsset, fmt.Sprintf("node %s input %q: %v", id, name, err),
					map[string]any{"node_id": id, "input": name, "asset_id": ref.Info.ID})
			}
			inputs[name], _ = json.Marshal(name2)
			nodeChanged = true
		}
		if nodeChanged {
			node["inputs"], _ = json.Marshal(inputs)
			out[id], _ = json.Marshal(node)
			changed = true
		} else {
			out[id] = s.workflow[id]
		}
	}
	if !changed {
		return s.raw, nil
	}
	return json.Marshal(out)
}

// loaderName is how ComfyUI's loaders name an asset's file: the path inside
// input/ for inputs, "<path> [output]" and "<path> [temp]" (its annotated
// names) for the others, the path inside the model folder for models.
func loaderName(lib *assets.Library, id string) (string, error) {
	cid, err := assets.CanonicalID(id)
	if err != nil {
		return "", fmt.Errorf("%q is not an asset id", id)
	}
	a, ok := lib.Get(cid)
	if !ok || a.Missing {
		return "", fmt.Errorf("no asset %s", cid)
	}
	switch a.Root {
	case "input":
		return a.Rel, nil
	case "output", "temp":
		return a.Rel + " [" + a.Root + "]", nil
	case "models":
		if a.LoaderPath != "" {
			return a.LoaderPath, nil
		}
	}
	return "", fmt.Errorf("asset %s is not a file ComfyUI loads", cid)
}

// comfyValidation turns ComfyUI's 400 answer to a prompt ({"error":
// {type, message, details}, "node_errors": {id: {errors: [...],
// class_type}}}) into invalid_workflow with per-node details.
func comfyValidation(body []byte) *requestError {
	var v struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
			Details string `json:"details"`
		} `json:"error"`
		NodeErrors map[string]struct {
			ClassType string `json:"class_type"`
			Errors    []struct {
				Type      string `json:"type"`
				Message   string `json:"message"`
				Details   string `json:"details"`
				ExtraInfo struct {
					InputName string `json:"input_name"`
				} `json:"extra_info"`
			} `json:"errors"`
		} `json:"node_errors"`
	}
	if json.Unmarshal(body, &v) != nil {
		return invalid(codeInvalidWorkflow, "ComfyUI refused the workflow", map[string]any{"node_errors": map[string]any{}})
	}
	msg := v.Error.Message
	if msg == "" {
		msg = "ComfyUI refused the workflow"
	}
	if v.Error.Details != "" {
		msg += ": " + v.Error.Details
	}
	perNode := map[string]any{}
	ids := make([]string, 0, len(v.NodeErrors))
	for id := range v.NodeErrors {
		ids = append(ids, id)
	}
	sortNodeIDs(ids)
	for i, id := range ids {
		ne := v.NodeErrors[id]
		var list []map[string]any
		for _, e := range ne.Errors {
			m := e.Message
			if e.Details != "" {
				m += ": " + e.Details
			}
			list = append(list, map[string]any{"field": e.ExtraInfo.InputName, "reason": e.Type, "message": m, "class_type": ne.ClassType})
			if i == 0 && len(list) == 1 {
				msg = fmt.Sprintf("Node %s (%s): %s", id, ne.ClassType, m)
			}
		}
		perNode[id] = list
	}
	return invalid(codeInvalidWorkflow, msg, map[string]any{"node_errors": perNode, "comfyui_error_type": v.Error.Type})
}
