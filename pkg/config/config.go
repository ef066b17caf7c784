// Package config loads a service's configuration: defaults in code, then a
// YAML file (unknown keys are errors: a typo must not pass silently), then
// environment overrides, validated once by the caller.
//
// A service's own variables (PREFIX_...) apply whenever they are set, empty
// included: setting one is deliberate, and PREFIX_BUS_URL= is how a file's
// bus is cleared for an embedded one. Variables shared with other software,
// such as NATS_URL, are read with LookupEnv instead, where empty is unset.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load fills cfg (a pointer to a struct holding defaults) from the YAML
// file at path, when path is not empty, and then from the environment:
// every field with a yaml tag can be set by PREFIX_PATH_TO_FIELD, upper
// case, e.g. PROXY_BUS_URL for bus.url with prefix PROXY.
func Load(path, envPrefix string, cfg any) error {
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		if err := Decode(data, cfg); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	return ApplyEnv(envPrefix, cfg, os.LookupEnv)
}

// LookupEnv is os.LookupEnv with an empty value reported as unset. It is
// for variables outside a service's prefix, NATS_URL above all: those are
// set for other tools too, and are often declared with no value (NAME= in
// a compose file, an unset ${NAME} interpolated), which must not wipe the
// file's setting.
func LookupEnv(name string) (string, bool) {
	v, ok := os.LookupEnv(name)
	if v == "" {
		return "", false
	}
	return v, ok
}

// Decode reads YAML into cfg, refusing unknown keys and a second document.
func Decode(data []byte, cfg any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file is no settings, not an error.
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	// The decoder stops after the first document: settings after a "---"
	// would be ignored without a word, typos included.
	for {
		var extra yaml.Node
		switch err := dec.Decode(&extra); {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		case !isEmptyDocument(&extra):
			return fmt.Errorf("line %d: a second YAML document; the configuration must be a single one", extra.Line)
		}
	}
}

// isEmptyDocument reports a document with no settings, as a trailing "---"
// leaves.
func isEmptyDocument(n *yaml.Node) bool {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// ApplyEnv overrides fields of cfg from variables named after their yaml
// paths, found through lookup.
func ApplyEnv(prefix string, cfg any, lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: want a pointer to a struct, got %T", cfg)
	}
	return applyEnv(strings.ToUpper(prefix), "", v.Elem(), lookup)
}

var durationType = reflect.TypeOf(time.Duration(0))

func applyEnv(envPath, yamlPath string, v reflect.Value, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		name := envPath + "_" + strings.ToUpper(tag)
		path := tag
		if yamlPath != "" {
			path = yamlPath + "." + tag
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != durationType {
			if err := applyEnv(name, path, fv, lookup); err != nil {
				return err
			}
			continue
		}
		raw, ok := lookup(name)
		if !ok {
			continue
		}
		if err := setFromString(fv, raw); err != nil {
			return fmt.Errorf("%s (from %s=%q): %w", path, name, raw, err)
		}
	}
	return nil
}

func setFromString(v reflect.Value, raw string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(raw, 10, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(raw, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetFloat(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot set a list of %s from the environment", v.Type().Elem())
		}
		items := reflect.MakeSlice(v.Type(), 0, 4)
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = reflect.Append(items, reflect.ValueOf(s).Convert(v.Type().Elem()))
			}
		}
		v.Set(items)
	default:
		return fmt.Errorf("cannot set a %s from the environment", v.Type())
	}
	return nil
}
