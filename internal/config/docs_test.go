package config_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"halb/internal/cli"
	"halb/internal/config"
)

const (
	configDoc   = "../../docs/configuration.md"
	examplesDir = "../../deploy/examples"
)

// yamlKeys returns the yaml key of each field of struct type t, and for
// fields that are structs (or pointers to or lists of them) their keys,
// under the parent's path.
func yamlKeys(t reflect.Type, prefix string) map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := prefix + name
		keys[path] = f.Type
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			for k, v := range yamlKeys(ft, path+".") {
				keys[k] = v
			}
		}
	}
	return keys
}

// The reference must list every key the config file accepts: the
// top-level ones in the sentence that names them and under a heading of
// their own, every nested one in the doc's tables. A key added to the raw
// structs without a line in docs/configuration.md fails here.
func TestConfigurationDocListsEveryKey(t *testing.T) {
	doc, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	keys := yamlKeys(config.RawConfigType(), "")

	list := regexp.MustCompile(`(?s)The top-level keys are (.*?)\.\s`).FindStringSubmatch(text)
	if list == nil {
		t.Fatal(`docs/configuration.md lost the sentence "The top-level keys are …."`)
	}
	for k := range keys {
		if strings.Contains(k, ".") {
			continue
		}
		if !strings.Contains(list[1], "`"+k+"`") {
			t.Errorf("top-level key %q is missing from the sentence listing them: %q", k, list[1])
		}
		if !strings.Contains(text, "\n## `"+k+"`") {
			t.Errorf("top-level key %q has no section (## `%s`)", k, k)
		}
	}
	for k := range keys {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(k, ".") {
			continue
		}
		// A row of a field table, or a {name, …} list in one.
		row := regexp.MustCompile("\\| `" + regexp.QuoteMeta(leaf) + "` \\|")
		inBraces := regexp.MustCompile(`\{[^}]*\b` + regexp.QuoteMeta(leaf) + `\b[^}]*\}`)
		if !row.MatchString(text) && !inBraces.MatchString(text) {
			t.Errorf("key %s has no row in a table of docs/configuration.md", k)
		}
	}
}

// Every example config loads and passes `halb check`: a change to the
// config rules that breaks an example, or an example that was never
// valid, fails here rather than on an operator's host.
func TestExampleConfigsPassCheck(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// talos, loopback, three-node, ipv6: a missing one is a lost example.
	if len(files) < 4 {
		t.Fatalf("found %d example configs in %s, want at least 4: %v", len(files), examplesDir, files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := config.Load(f)
			if err != nil {
				t.Fatalf("config.Load: %v", err)
			}
			if len(cfg.Frontends) == 0 {
				t.Fatal("no frontends")
			}
			var stdout, stderr bytes.Buffer
			if code := cli.Main([]string{"check", "--config", f}, &stdout, &stderr); code != 0 {
				t.Fatalf("halb check --config %s: exit %d\n%s%s", f, code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), ": OK: ") {
				t.Errorf("halb check printed no OK line:\n%s", stdout.String())
			}
		})
	}
}

// Every example config is listed in the examples' README, so a reader
// finds it.
func TestExamplesReadmeListsEveryExample(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(examplesDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !bytes.Contains(readme, []byte("`"+filepath.Base(f)+"`")) {
			t.Errorf("deploy/examples/README.md does not list %s", filepath.Base(f))
		}
	}
}
