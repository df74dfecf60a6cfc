package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"gopkg.in/yaml.v3"
)

// Output formats of the commands whose output is data (--output).
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// outputFlag declares --output with the command's default format.
func outputFlag(fs *envFlags, def string) *string {
	return fs.StringP("output", "o", def, "output format: table, json or yaml")
}

// checkOutput refuses an unknown --output before any request is sent.
func checkOutput(format string) error {
	switch format {
	case outputTable, outputJSON, outputYAML:
		return nil
	}
	return usageError{fmt.Errorf("--output %q: want table, json or yaml", format)}
}

// render writes a JSON document in the format asked for. A table shows an
// array of objects as one row per object and a column per leaf (nested
// keys joined by "."), and an object as one row per leaf.
func render(w io.Writer, format string, doc []byte) error {
	switch format {
	case outputYAML:
		return writeYAML(w, doc)
	case outputTable:
		return writeTable(w, doc)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, doc, "", "  "); err != nil {
		return fmt.Errorf("the hub answered with something else than JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// writeYAML converts JSON to block-style YAML, keeping the key order and
// the numbers as they were written.
func writeYAML(w io.Writer, doc []byte) error {
	var n yaml.Node
	if err := yaml.Unmarshal(doc, &n); err != nil {
		return fmt.Errorf("converting the hub's answer to YAML: %w", err)
	}
	var plain func(n *yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style = 0 // block collections; strings quoted only where YAML needs it
		for _, c := range n.Content {
			plain(c)
		}
	}
	plain(&n)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

func writeTable(w io.Writer, doc []byte) error {
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return fmt.Errorf("the hub answered with something else than JSON: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch v := v.(type) {
	case []any:
		var columns []string
		rows := make([]map[string]string, len(v))
		for i, item := range v {
			rows[i] = map[string]string{}
			flatten("", item, func(path, value string) {
				if !slices.Contains(columns, path) {
					columns = append(columns, path)
				}
				rows[i][path] = value
			})
		}
		header := make([]string, len(columns))
		for i, c := range columns {
			header[i] = strings.ToUpper(cmp.Or(c, "value"))
		}
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for _, r := range rows {
			cells := make([]string, len(columns))
			for i, c := range columns {
				cells[i] = r[c]
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
	default:
		fmt.Fprintln(tw, "PATH\tVALUE")
		flatten("", v, func(path, value string) { fmt.Fprintf(tw, "%s\t%s\n", path, value) })
	}
	return tw.Flush()
}

// flatten calls leaf for every leaf of v in document order (objects are
// decoded into maps, so keys come sorted); arrays and empty objects are
// leaves, strings are shown without quotes.
func flatten(prefix string, v any, leaf func(path, value string)) {
	if m, ok := v.(map[string]any); ok && len(m) > 0 {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, m[k], leaf)
		}
		return
	}
	switch v := v.(type) {
	case string:
		leaf(prefix, v)
	case nil:
		leaf(prefix, "null")
	default:
		b, _ := json.Marshal(v)
		leaf(prefix, string(b))
	}
}
