package main

// The Lua side, as Argo CD's util/lua sets it up: no standard library but package, base, table
// and a safe os (time and date only, also through require("os")); a one-second limit; the object
// as the global `obj` and `actionParams` empty; results encoded by layeh.com/gopher-json.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// healthStatus is what a health script returns, as Argo CD decodes it.
type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// The health statuses Argo CD accepts; any other becomes Unknown.
var validHealth = map[string]bool{
	"Unknown": true, "Progressing": true, "Healthy": true, "Suspended": true, "Degraded": true, "Missing": true,
}

const invalidHealth = "Lua returned an invalid health status"

// resourceAction is an action as Argo CD's discovery lists it.
type resourceAction struct {
	Name        string `json:"name"`
	Disabled    bool   `json:"disabled"`
	DisplayName string `json:"displayName,omitempty"`
	IconClass   string `json:"iconClass,omitempty"`
}

func runLua(object map[string]any, script string) (*lua.LState, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			l.Close()
			return nil, err
		}
	}
	safeOs := safeOsFunctions(l)
	l.SetGlobal(lua.OsLibName, safeOs)
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(safeOs)
		return 1
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, object))
	if err := l.DoString(script); err != nil {
		l.Close()
		var apiErr *lua.ApiError
		if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = ""
			return nil, apiErr
		}
		return nil, err
	}
	return l, nil
}

// safeOsFunctions is gopher-lua's os library reduced to time and date, the two functions Argo
// CD's safe os exposes (its implementation is a copy of gopher-lua's).
func safeOsFunctions(l *lua.LState) *lua.LTable {
	full := l.NewTable()
	l.Push(l.NewFunction(lua.OpenOs))
	l.Push(lua.LString(lua.OsLibName))
	l.Call(1, 1)
	if opened, ok := l.Get(-1).(*lua.LTable); ok {
		full = opened
	}
	l.Pop(1)
	safe := l.NewTable()
	for _, name := range []string{"time", "date"} {
		safe.RawSetString(name, full.RawGetString(name))
	}
	return safe
}

func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		array := l.CreateTable(len(v), 0)
		for _, item := range v {
			array.Append(decodeValue(l, item))
		}
		return array
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return table
	}
	return lua.LNil
}

// normalizeNumbers turns json.Numbers into int64 or float64, as an unstructured object holds them.
func normalizeNumbers(value any) any {
	switch v := value.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = normalizeNumbers(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = normalizeNumbers(v[k])
		}
	}
	return value
}

func executeHealth(object map[string]any, script string) (*healthStatus, error) {
	l, err := runLua(object, script)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	returned := l.Get(-1)
	switch returned.Type() {
	case lua.LTNil:
		return nil, nil
	case lua.LTTable:
	default:
		return nil, fmt.Errorf("expect table output from Lua script, not %s", returned.Type())
	}
	encoded, err := luajson.Encode(returned)
	if err != nil {
		return nil, err
	}
	status := &healthStatus{}
	if err := json.Unmarshal(encoded, status); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Value == "array" {
			// An empty table encodes as [], which Argo CD reads as an empty status.
			return &healthStatus{}, nil
		}
		return nil, err
	}
	if !validHealth[status.Status] {
		return &healthStatus{Status: "Unknown", Message: invalidHealth}, nil
	}
	return status, nil
}

func executeDiscovery(object map[string]any, script string) ([]resourceAction, error) {
	if script == "" {
		return nil, errors.New("no action discovery script")
	}
	encoded, err := tableOf(object, script)
	if err != nil {
		return nil, err
	}
	if string(encoded) == "[]" {
		return []resourceAction{}, nil
	}
	var listed map[string]any
	if err := json.Unmarshal(encoded, &listed); err != nil {
		return nil, fmt.Errorf("the action table: %w", err)
	}
	available := make([]resourceAction, 0, len(listed))
	for _, name := range sortedKeys(listed) {
		action := resourceAction{Name: name, Disabled: isDisabled(listed[name])}
		if fields, ok := listed[name].(map[string]any); ok {
			action.DisplayName, _ = fields["displayName"].(string)
			action.IconClass, _ = fields["iconClass"].(string)
		}
		available = append(available, action)
	}
	return available, nil
}

// tableOf runs a script that must return a table, and returns the table as JSON.
func tableOf(object map[string]any, script string) ([]byte, error) {
	l, err := runLua(object, script)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	returned := l.Get(-1)
	if returned.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", returned.Type())
	}
	return luajson.Encode(returned)
}

// isDisabled: actions are enabled unless their table says disabled = true.
func isDisabled(action any) bool {
	fields, ok := action.(map[string]any)
	if !ok {
		return false
	}
	disabled, _ := fields["disabled"].(bool)
	return disabled
}

// executeAction returns the object as an old-style action (one returning obj) leaves it.
func executeAction(object map[string]any, script string) (map[string]any, error) {
	encoded, err := tableOf(object, script)
	if err != nil {
		return nil, err
	}
	var changed map[string]any
	if err := json.Unmarshal(encoded, &changed); err != nil {
		return nil, fmt.Errorf("the action returned no object: %w", err)
	}
	return cleanReturned(changed, object), nil
}

// cleanReturned undoes what Lua cannot tell apart: an empty table is encoded as an empty array,
// so where the object had a map, an empty array becomes an empty map again (as Argo CD does).
func cleanReturned(changed, original map[string]any) map[string]any {
	for key, before := range original {
		after, ok := changed[key]
		if !ok {
			continue
		}
		switch now := after.(type) {
		case map[string]any:
			if was, ok := before.(map[string]any); ok {
				changed[key] = cleanReturned(now, was)
			}
		case []any:
			switch was := before.(type) {
			case map[string]any:
				if len(now) == 0 {
					changed[key] = map[string]any{}
				}
			case []any:
				changed[key] = cleanReturnedArray(now, was)
			}
		}
	}
	return changed
}

func cleanReturnedArray(changed, original []any) []any {
	for i := range changed {
		if i >= len(original) {
			break
		}
		switch now := changed[i].(type) {
		case map[string]any:
			if was, ok := original[i].(map[string]any); ok {
				changed[i] = cleanReturned(now, was)
			}
		case []any:
			if was, ok := original[i].([]any); ok {
				changed[i] = cleanReturnedArray(now, was)
			}
		}
	}
	return changed
}
