package main

import (
	"encoding/json"

	jsonpatch "github.com/evanphx/json-patch"
)

// requests are the PATCH requests (JSON merge patches) Argo CD's server sends for an action: the
// whole difference to the status subresource when the status changed (the API server keeps only
// its status there), then the rest to the object itself. Null where no request is sent.
type requests struct {
	StatusSubresource json.RawMessage `json:"statusSubresource"`
	Resource          json.RawMessage `json:"resource"`
}

func patchRequests(live []byte, changed map[string]any) (*requests, error) {
	var liveObject any
	if err := json.Unmarshal(live, &liveObject); err != nil {
		return nil, err
	}
	liveBytes, err := json.Marshal(liveObject)
	if err != nil {
		return nil, err
	}
	changedBytes, err := json.Marshal(changed)
	if err != nil {
		return nil, err
	}
	diff, err := jsonpatch.CreateMergePatch(liveBytes, changedBytes)
	if err != nil {
		return nil, err
	}
	out := &requests{StatusSubresource: json.RawMessage("null"), Resource: json.RawMessage("null")}
	if string(diff) == "{}" {
		return out, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(diff, &fields); err != nil {
		return nil, err
	}
	if _, ok := fields["status"]; !ok {
		out.Resource = diff
		return out, nil
	}
	out.StatusSubresource = diff
	delete(fields, "status")
	if len(fields) > 0 {
		rest, err := json.Marshal(fields)
		if err != nil {
			return nil, err
		}
		out.Resource = rest
	}
	return out, nil
}
