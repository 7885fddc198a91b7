// Command gitops-eval judges Kubernetes objects the way GitOps tools do, with the libraries those
// tools embed, so the end-to-end tests can assert what Flux, Helm and Argo CD would report for
// objects the operator wrote:
//
//   - kstatus: sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, the health rule of Flux's
//     kustomize-controller and helm-controller and of `helm install/upgrade --wait` (Helm 4's
//     default "watcher" strategy).
//   - Argo CD: the Lua health check configured in an argocd-cm ConfigMap under
//     `resource.customizations.health.<group>_<kind>`, run in gopher-lua with Argo CD's sandbox
//     (only the package, base and table libraries, a reduced `os` with `time` and `date`, a
//     preloaded `json` module, a one-second deadline, the live object in the global `obj`), and
//     Argo CD's own rule in front of it: an object being deleted is Progressing ("Pending
//     deletion") whatever the script says.
//
// Input (stdin): a stream of JSON values, each a Kubernetes object or a list with `items`.
// Output (stdout): one JSON line per object, in input order:
//
//	{"kind":…, "name":…, "kstatus":{"status":…,"message":…,"conditions":[…]},
//	 "lua":{"status":…,"message":…}, "argocd":{"status":…,"message":…}}
//
// with `kstatusError` / `luaError` instead of the result when an evaluation fails. `lua` is the
// script's own answer, `argocd` what Argo CD shows. Exit status: 0 when every object was read, 2
// on bad flags or input.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// Argo CD's argocd-cm key prefixes for Lua health checks and for opening the full standard
// library to one of them.
const (
	healthPrefix   = "resource.customizations.health."
	openLibsPrefix = "resource.customizations.useOpenLibs."
)

// Health is Argo CD's health assessment (gitops-engine's HealthStatus).
type Health struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// Kstatus is a kstatus result.
type Kstatus struct {
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

// Verdict is the output line for one object.
type Verdict struct {
	APIVersion   string   `json:"apiVersion"`
	Kind         string   `json:"kind"`
	Namespace    string   `json:"namespace,omitempty"`
	Name         string   `json:"name"`
	Generation   int64    `json:"generation"`
	Kstatus      *Kstatus `json:"kstatus,omitempty"`
	KstatusError string   `json:"kstatusError,omitempty"`
	Lua          *Health  `json:"lua,omitempty"`
	LuaError     string   `json:"luaError,omitempty"`
	Argocd       *Health  `json:"argocd,omitempty"`
}

// healthCheck is one configured Lua health check.
type healthCheck struct {
	script   string
	openLibs bool
}

func main() {
	cm := flag.String("argocd-cm", "", "argocd-cm ConfigMap (or a patch of it) in YAML or JSON: its "+
		"resource.customizations.health.<group>_<kind> keys are the Lua health checks")
	script := flag.String("health-lua", "", "a Lua health check to run for every object (instead of -argocd-cm)")
	flag.Parse()
	checks, fallback, err := loadChecks(*cm, *script)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gitops-eval: %v\n", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "gitops-eval: reading input: %v\n", err)
			out.Flush()
			os.Exit(2)
		}
		objects, err := decodeObjects(raw)
		if err != nil {
			fmt.Fprintf(os.Stderr, "gitops-eval: %v\n", err)
			out.Flush()
			os.Exit(2)
		}
		for _, u := range objects {
			if err := enc.Encode(evaluate(u, checks, fallback)); err != nil {
				fmt.Fprintf(os.Stderr, "gitops-eval: writing output: %v\n", err)
				os.Exit(2)
			}
		}
	}
}

// loadChecks reads the health checks of an argocd-cm (keyed "group/Kind" like Argo CD's resource
// overrides) or the single script given with -health-lua.
func loadChecks(cmPath, scriptPath string) (map[string]healthCheck, *healthCheck, error) {
	switch {
	case cmPath != "" && scriptPath != "":
		return nil, nil, errors.New("-argocd-cm and -health-lua exclude each other")
	case scriptPath != "":
		b, err := os.ReadFile(scriptPath)
		if err != nil {
			return nil, nil, err
		}
		return nil, &healthCheck{script: string(b)}, nil
	case cmPath == "":
		return nil, nil, nil
	}
	b, err := os.ReadFile(cmPath)
	if err != nil {
		return nil, nil, err
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cmPath, err)
	}
	checks := map[string]healthCheck{}
	for key, script := range cm.Data {
		if groupKind, ok := strings.CutPrefix(key, healthPrefix); ok {
			overrideKey, err := overrideKey(groupKind)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", key, err)
			}
			check := checks[overrideKey]
			check.script = script
			checks[overrideKey] = check
		}
	}
	for key, value := range cm.Data {
		if groupKind, ok := strings.CutPrefix(key, openLibsPrefix); ok {
			overrideKey, err := overrideKey(groupKind)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", key, err)
			}
			if check, ok := checks[overrideKey]; ok {
				check.openLibs = value == "true"
				checks[overrideKey] = check
			}
		}
	}
	return checks, nil, nil
}

// overrideKey turns the `<group>_<kind>` (or `<kind>`) of an argocd-cm key into Argo CD's
// "group/Kind" lookup key.
func overrideKey(groupKind string) (string, error) {
	parts := strings.Split(groupKind, "_")
	switch {
	case len(parts) == 2:
		return parts[0] + "/" + parts[1], nil
	case len(parts) == 1 && groupKind != "":
		return groupKind, nil
	}
	return "", fmt.Errorf("expected <group>_<kind> or <kind>, got %q", groupKind)
}

// decodeObjects decodes one input value into objects (the items of a list), with integers as
// int64 like the objects a client-go informer hands to kstatus and Argo CD.
func decodeObjects(raw json.RawMessage) ([]*unstructured.Unstructured, error) {
	var obj map[string]interface{}
	if err := utiljson.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("input is not a JSON object: %w", err)
	}
	items, isList := obj["items"].([]interface{})
	if !isList {
		return []*unstructured.Unstructured{{Object: obj}}, nil
	}
	objects := make([]*unstructured.Unstructured, 0, len(items))
	for i, item := range items {
		m, ok := item.(map[string]interface{})
		if !ok {
			return nil, fmt.Errorf("items[%d] is not an object", i)
		}
		objects = append(objects, &unstructured.Unstructured{Object: m})
	}
	return objects, nil
}

func evaluate(u *unstructured.Unstructured, checks map[string]healthCheck, fallback *healthCheck) Verdict {
	v := Verdict{
		APIVersion: u.GetAPIVersion(),
		Kind:       u.GetKind(),
		Namespace:  u.GetNamespace(),
		Name:       u.GetName(),
		Generation: u.GetGeneration(),
	}
	if res, err := status.Compute(u); err != nil {
		v.KstatusError = err.Error()
	} else {
		conditions := res.Conditions
		if conditions == nil {
			conditions = []status.Condition{}
		}
		v.Kstatus = &Kstatus{Status: res.Status.String(), Message: res.Message, Conditions: conditions}
	}

	check := fallback
	if check == nil {
		gvk := u.GroupVersionKind()
		key := gvk.Kind
		if gvk.Group != "" {
			key = gvk.Group + "/" + gvk.Kind
		}
		if c, ok := checks[key]; ok && c.script != "" {
			check = &c
		} else {
			v.LuaError = fmt.Sprintf("no health check configured for %s", key)
		}
	}
	if check != nil {
		h, err := runHealth(u, *check)
		if err != nil {
			v.LuaError = err.Error()
			// Argo CD shows a failing health check as Unknown with the error.
			v.Argocd = &Health{Status: "Unknown", Message: err.Error()}
		} else {
			v.Lua = h
			v.Argocd = h
		}
	}
	// gitops-engine's GetResourceHealth: deletion wins over any health check.
	if u.GetDeletionTimestamp() != nil {
		v.Argocd = &Health{Status: "Progressing", Message: "Pending deletion"}
	}
	return v
}

// validHealth lists gitops-engine's health status codes; anything else is "Unknown".
var validHealth = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

// runHealth runs a health check the way Argo CD's Lua VM does.
func runHealth(u *unstructured.Unstructured, check healthCheck) (*Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !check.openLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("opening %s: %w", lib.name, err)
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	luajson.Preload(l)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, u.Object))
	if err := l.DoString(check.script); err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return &Health{}, nil
	case lua.LTTable:
	default:
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	b, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	h := &Health{}
	if string(b) != "[]" { // an empty table encodes as an array: no status
		if err := json.Unmarshal(b, h); err != nil {
			return nil, err
		}
	}
	if !validHealth[h.Status] {
		return &Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

// toLua converts a decoded JSON value into Lua values (objects to tables, arrays to sequences,
// numbers to numbers, JSON null to nil), like Argo CD's decodeValue.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []interface{}:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

// safeOs is the reduced `os` library of Argo CD's sandbox: `time` and `date` only (no execute,
// exit, getenv, remove, rename, tmpname).
var safeOs = map[string]lua.LGFunction{"time": osTime, "date": osDate}

func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.OsLibName, safeOs))
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOs))
	return 1
}

// osTime: os.time() is now; os.time{year=…, month=…, day=…, hour=…, min=…, sec=…} that moment.
func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	t := l.CheckTable(1)
	field := func(name string, def int) int {
		if n, ok := t.RawGetString(name).(lua.LNumber); ok {
			return int(n)
		}
		return def
	}
	at := time.Date(field("year", 1970), time.Month(field("month", 1)), field("day", 1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(at.Unix()))
	return 1
}

// osDate: os.date([format [, time]]) with format "*t" (a table) or a strftime subset; a leading
// "!" means UTC.
func osDate(l *lua.LState) int {
	t := time.Now()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
	}
	if l.GetTop() >= 2 {
		t = time.Unix(l.CheckInt64(2), 0)
	}
	if rest, ok := strings.CutPrefix(format, "!"); ok {
		t, format = t.UTC(), rest
	}
	if strings.HasPrefix(format, "*t") {
		tbl := l.NewTable()
		for name, n := range map[string]int{
			"year": t.Year(), "month": int(t.Month()), "day": t.Day(), "hour": t.Hour(),
			"min": t.Minute(), "sec": t.Second(), "wday": int(t.Weekday()) + 1, "yday": t.YearDay(),
		} {
			tbl.RawSetString(name, lua.LNumber(n))
		}
		tbl.RawSetString("isdst", lua.LFalse)
		l.Push(tbl)
		return 1
	}
	layouts := map[byte]string{
		'Y': "2006", 'y': "06", 'm': "01", 'd': "02", 'H': "15", 'I': "03", 'M': "04", 'S': "05",
		'p': "PM", 'a': "Mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'Z': "MST", 'z': "-0700",
		'c': "Mon Jan  2 15:04:05 2006", 'x': "01/02/06", 'X': "15:04:05", 'F': "2006-01-02",
	}
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			b.WriteByte(format[i])
			continue
		}
		i++
		if layout, ok := layouts[format[i]]; ok {
			b.WriteString(t.Format(layout))
		} else {
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	l.Push(lua.LString(b.String()))
	return 1
}
