// Command argocd-lua runs Argo CD's resource customizations (health checks and actions, Lua) on
// Kubernetes objects the way Argo CD runs them: the same Lua interpreter (gopher-lua), the same
// libraries opened, the object as the global `obj`, the result decoded by the same JSON library,
// and an action's result turned into the requests Argo CD's server sends (a JSON merge patch of
// the status subresource, then one of the object).
//
// The scripts come either from an argocd-cm ConfigMap (`--config`, its
// `resource.customizations.<health|actions>.<group>_<Kind>` keys, as Argo CD reads them) or from a
// directory laid out like Argo CD's built-in resource_customizations (`--builtin`).
//
//	argocd-lua health  (--config CM | --builtin DIR) --kind GROUP/KIND  < object.json
//	argocd-lua actions (--config CM | --builtin DIR) --kind GROUP/KIND  < object.json
//	argocd-lua run ACTION (--config CM | --builtin DIR) --kind GROUP/KIND  < object.json
//	argocd-lua config --scripts DIR --format argocd-cm|helm-values
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fail(2, "usage: argocd-lua health|actions|run ACTION|config [flags]")
	}
	command, args := os.Args[1], os.Args[2:]
	var err error
	switch command {
	case "health":
		err = health(args)
	case "actions":
		err = actions(args)
	case "run":
		if len(args) == 0 {
			fail(2, "usage: argocd-lua run ACTION (--config CM | --builtin DIR) --kind GROUP/KIND")
		}
		err = run(args[0], args[1:])
	case "config":
		err = config(args)
	default:
		fail(2, "unknown command %q", command)
	}
	if err != nil {
		fail(1, "%v", err)
	}
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argocd-lua: "+format+"\n", args...)
	os.Exit(code)
}

// source names where a kind's scripts come from.
type source struct {
	config, builtin, kind string
}

func parseSource(name string, args []string) (source, error) {
	var s source
	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	flags.StringVar(&s.config, "config", "", "an argocd-cm ConfigMap (YAML) with resource.customizations keys")
	flags.StringVar(&s.builtin, "builtin", "", "a directory laid out like Argo CD's resource_customizations")
	flags.StringVar(&s.kind, "kind", "", "the GROUP/KIND whose scripts to run")
	if err := flags.Parse(args); err != nil {
		return s, err
	}
	if (s.config == "") == (s.builtin == "") || s.kind == "" {
		return s, errors.New("give --kind and one of --config or --builtin")
	}
	return s, nil
}

func (s source) customization() (*customization, error) {
	if s.config != "" {
		return fromConfigMap(s.config, s.kind)
	}
	return fromDirectory(filepath.Join(s.builtin, s.kind))
}

func readObject() (map[string]any, []byte, error) {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the object from stdin: %w", err)
	}
	var object map[string]any
	decoder := json.NewDecoder(strings.NewReader(string(raw)))
	// Integers stay integers, as in the unstructured objects Argo CD reads from its cache.
	decoder.UseNumber()
	if err := decoder.Decode(&object); err != nil {
		return nil, nil, fmt.Errorf("decoding the object: %w", err)
	}
	return normalizeNumbers(object).(map[string]any), raw, nil
}

func printJSON(value any) error {
	out, err := json.Marshal(value)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

func health(args []string) error {
	src, err := parseSource("health", args)
	if err != nil {
		return err
	}
	c, err := src.customization()
	if err != nil {
		return err
	}
	if c.health == "" {
		return fmt.Errorf("%s has no health script", src.kind)
	}
	object, _, err := readObject()
	if err != nil {
		return err
	}
	status, err := executeHealth(object, c.health)
	if err != nil {
		return err
	}
	return printJSON(status)
}

func actions(args []string) error {
	src, err := parseSource("actions", args)
	if err != nil {
		return err
	}
	c, err := src.customization()
	if err != nil {
		return err
	}
	object, _, err := readObject()
	if err != nil {
		return err
	}
	available, err := executeDiscovery(object, c.discovery)
	if err != nil {
		return err
	}
	return printJSON(available)
}

func run(action string, args []string) error {
	src, err := parseSource("run", args)
	if err != nil {
		return err
	}
	c, err := src.customization()
	if err != nil {
		return err
	}
	script, ok := c.actions[action]
	if !ok {
		return fmt.Errorf("%s has no action %q (it has %s)", src.kind, action, strings.Join(sortedKeys(c.actions), ", "))
	}
	object, raw, err := readObject()
	if err != nil {
		return err
	}
	changed, err := executeAction(object, script)
	if err != nil {
		return err
	}
	requests, err := patchRequests(raw, changed)
	if err != nil {
		return err
	}
	return printJSON(requests)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
