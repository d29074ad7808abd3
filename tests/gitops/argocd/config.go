package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

const customizationsKey = "resource.customizations"

// customization is one kind's scripts.
type customization struct {
	health    string
	discovery string
	actions   map[string]string
}

// resourceActions is the value of a resource.customizations.actions key, as Argo CD reads it.
type resourceActions struct {
	Discovery   string             `json:"discovery.lua,omitempty"`
	Definitions []actionDefinition `json:"definitions,omitempty"`
}

type actionDefinition struct {
	Name string `json:"name"`
	Lua  string `json:"action.lua"`
}

type configMap struct {
	Data map[string]string `json:"data"`
}

// configKey is the argocd-cm key of a GROUP/KIND's customization of type kind.
func configKey(customizationType, groupKind string) string {
	return customizationsKey + "." + customizationType + "." + strings.Replace(groupKind, "/", "_", 1)
}

func fromConfigMap(path, groupKind string) (*customization, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cm configMap
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c := &customization{health: cm.Data[configKey("health", groupKind)], actions: map[string]string{}}
	if text, ok := cm.Data[configKey("actions", groupKind)]; ok {
		var parsed resourceActions
		if err := yaml.Unmarshal([]byte(text), &parsed); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, configKey("actions", groupKind), err)
		}
		c.discovery = parsed.Discovery
		for _, d := range parsed.Definitions {
			c.actions[d.Name] = d.Lua
		}
	}
	if c.health == "" && c.discovery == "" {
		return nil, fmt.Errorf("%s has no %s.*.%s key", path, customizationsKey, strings.Replace(groupKind, "/", "_", 1))
	}
	return c, nil
}

// fromDirectory reads DIR/health.lua, DIR/actions/discovery.lua and DIR/actions/NAME/action.lua,
// the layout of Argo CD's built-in customizations.
func fromDirectory(dir string) (*customization, error) {
	c := &customization{actions: map[string]string{}}
	if text, err := os.ReadFile(filepath.Join(dir, "health.lua")); err == nil {
		c.health = string(text)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if text, err := os.ReadFile(filepath.Join(dir, "actions", "discovery.lua")); err == nil {
		c.discovery = string(text)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	scripts, err := filepath.Glob(filepath.Join(dir, "actions", "*", "action.lua"))
	if err != nil {
		return nil, err
	}
	for _, script := range scripts {
		text, err := os.ReadFile(script)
		if err != nil {
			return nil, err
		}
		c.actions[filepath.Base(filepath.Dir(script))] = string(text)
	}
	if c.health == "" && c.discovery == "" {
		return nil, fmt.Errorf("%s has neither health.lua nor actions/discovery.lua", dir)
	}
	return c, nil
}

// config prints the argocd-cm keys for every GROUP/KIND directory under --scripts: as a
// ConfigMap to merge into argocd-cm, or as values of Argo CD's Helm chart (configs.cm).
func config(args []string) error {
	flags := flag.NewFlagSet("config", flag.ContinueOnError)
	scripts := flags.String("scripts", "", "a directory of GROUP/KIND directories laid out like Argo CD's resource_customizations")
	format := flags.String("format", "argocd-cm", "argocd-cm or helm-values")
	if err := flags.Parse(args); err != nil {
		return err
	}
	kinds, err := filepath.Glob(filepath.Join(*scripts, "*", "*"))
	if err != nil || len(kinds) == 0 {
		return fmt.Errorf("no GROUP/KIND directories under %q", *scripts)
	}
	data := map[string]string{}
	for _, dir := range kinds {
		groupKind := filepath.Base(filepath.Dir(dir)) + "/" + filepath.Base(dir)
		c, err := fromDirectory(dir)
		if err != nil {
			return err
		}
		if c.health != "" {
			data[configKey("health", groupKind)] = c.health
		}
		if c.discovery != "" {
			actions, err := actionsValue(c)
			if err != nil {
				return err
			}
			data[configKey("actions", groupKind)] = actions
		}
	}
	switch *format {
	case "argocd-cm":
		fmt.Print(configMapYAML(data))
	case "helm-values":
		fmt.Print(helmValuesYAML(data))
	default:
		return fmt.Errorf("--format: %q is neither argocd-cm nor helm-values", *format)
	}
	return nil
}

// actionsValue is a resource.customizations.actions value, written by hand so that every script
// stays a readable block.
func actionsValue(c *customization) (string, error) {
	var b strings.Builder
	b.WriteString("discovery.lua: " + block(c.discovery, "  "))
	b.WriteString("definitions:\n")
	for _, name := range sortedKeys(c.actions) {
		b.WriteString("- name: " + name + "\n")
		b.WriteString("  action.lua: " + block(c.actions[name], "    "))
	}
	// What Argo CD will read must be what the files say.
	var parsed resourceActions
	if err := yaml.Unmarshal([]byte(b.String()), &parsed); err != nil {
		return "", err
	}
	if parsed.Discovery != c.discovery || len(parsed.Definitions) != len(c.actions) {
		return "", errors.New("the generated actions do not read back as written")
	}
	return b.String(), nil
}

// block is text as a YAML literal block scalar under indent.
func block(text, indent string) string {
	header := "|\n"
	if !strings.HasSuffix(text, "\n") {
		header = "|-\n"
		text += "\n"
	} else if strings.HasSuffix(text, "\n\n") {
		header = "|+\n"
	}
	var b strings.Builder
	b.WriteString(header)
	for _, line := range strings.SplitAfter(strings.TrimSuffix(text, "\n"), "\n") {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString(indent + line + "\n")
	}
	return b.String()
}

const generatedBy = "# Generated by tests/gitops/argocd (argocd-lua config) from charts/stepwise/argocd/resource_customizations;\n# edit the .lua files there, not this file.\n"

func configMapYAML(data map[string]string) string {
	var b strings.Builder
	b.WriteString(generatedBy)
	b.WriteString("# Merge into Argo CD's argocd-cm: kubectl -n argocd patch configmap argocd-cm --patch-file argocd-cm.yaml\n")
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  labels:\n    app.kubernetes.io/part-of: argocd\ndata:\n")
	keys := sortedKeys(data)
	sort.Strings(keys)
	for _, key := range keys {
		b.WriteString("  " + key + ": " + block(data[key], "    "))
	}
	return b.String()
}

func helmValuesYAML(data map[string]string) string {
	var b strings.Builder
	b.WriteString(generatedBy)
	b.WriteString("# Values for Argo CD's Helm chart (argo-cd): helm upgrade argocd argo/argo-cd --reuse-values -f argo-cd-values.yaml\n")
	b.WriteString("configs:\n  cm:\n")
	for _, key := range sortedKeys(data) {
		b.WriteString("    " + key + ": " + block(data[key], "      "))
	}
	return b.String()
}
