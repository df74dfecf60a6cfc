package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// applyConfigFile sets `twinhub run`'s flags from a YAML file whose keys
// are flag names (http-addr: 127.0.0.1:8080). A flag given on the command
// line or in its TWINHUB_* environment variable wins over the file: flags
// > environment > file > defaults. Unknown keys are errors, so that a
// misspelt setting does not go unnoticed.
func applyConfigFile(fs *envFlags, path string) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading --config: %w", err)
	}
	var settings map[string]any
	if err := yaml.Unmarshal(b, &settings); err != nil {
		return fmt.Errorf("--config %s is not a YAML map of flag names to values: %w", path, err)
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []error
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			errs = append(errs, fmt.Errorf("--config %s: %q is not a flag of twinhub run (see twinhub run --help)", path, k))
			continue
		}
		if _, inEnv := os.LookupEnv(envName(k)); f.Changed || inEnv {
			continue
		}
		v := settings[k]
		var s string
		switch v := v.(type) {
		case []any: // a list, e.g. hostname: [a, b]
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		case nil:
			s = ""
		default:
			s = fmt.Sprint(v)
		}
		if err := fs.Set(k, s); err != nil {
			errs = append(errs, fmt.Errorf("--config %s: %s: %v", path, k, err))
		}
	}
	return errors.Join(errs...)
}
