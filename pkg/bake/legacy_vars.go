package bake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// legacyVar is a user variable of a legacy template. All legacy variables
// are strings.
type legacyVar struct {
	name      string
	declared  bool
	keyRng    hcl.Range
	required  bool
	sensitive bool
	// raw is the value before rendering, from the default, a var file or
	// -var; set says there is one.
	raw string
	set bool
	// rawRng and rawSrc locate raw for messages (nil for -var).
	rawRng *hcl.Range
	rawSrc []byte
	from   string

	value string
	done  bool
}

// legacyVars are the variables of one legacy template, evaluated.
type legacyVars struct {
	byName map[string]*legacyVar
}

// lookup is {{user `name`}}.
func (vs *legacyVars) lookup(name string) (string, error) {
	v := vs.byName[name]
	if v == nil {
		return "", &tmplFuncError{
			summary: "Undeclared variable",
			detail:  fmt.Sprintf("{{user `%s`}} names a variable that the template's \"variables\" section does not declare and that no -var or var file gives.", name),
		}
	}
	if !v.done {
		return "", errNotReady{name: name}
	}
	return v.value, nil
}

func (vs *legacyVars) names() []string {
	names := make([]string, 0, len(vs.byName))
	for n := range vs.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// planVariables lists the variables for the plan, sorted by name, with
// sensitive values masked.
func (vs *legacyVars) planVariables() []Variable {
	var out []Variable
	for _, n := range vs.names() {
		v := vs.byName[n]
		pv := Variable{Name: n, Type: "string", Sensitive: v.sensitive, Value: jsonStringValue(v.value), From: v.from}
		if v.sensitive {
			// As the HCL2 loader writes it, so that twins compare equal.
			pv.Value = json.RawMessage(`"<sensitive>"`)
		}
		out = append(out, pv)
	}
	return out
}

// sensitiveValues returns the non-empty values of sensitive variables,
// sorted and without repeats.
func (vs *legacyVars) sensitiveValues() []string {
	var out []string
	for _, n := range vs.names() {
		if v := vs.byName[n]; v.sensitive && v.value != "" {
			out = append(out, v.value)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// loadVariables reads the variables section, the var files and -var
// values, and evaluates every variable: later sources override earlier
// ones (default, then var files in order, then -var), and values may use
// {{env}}, {{user}} of other variables, {{timestamp}} and the rest, as in
// Packer.
func (lg *legacyLoad) loadVariables(varFiles map[string][]byte) *legacyVars {
	vs := &legacyVars{byName: map[string]*legacyVar{}}
	if n := lg.section("variables", jsonObject); n != nil {
		for _, m := range n.members {
			if vs.byName[m.key] != nil {
				lg.errorf(m.keyRng, "Duplicate variable", "The variable %q is declared more than once.", m.key)
				continue
			}
			v := &legacyVar{name: m.key, declared: true, keyRng: m.keyRng, from: "default"}
			vs.byName[m.key] = v
			switch m.val.kind {
			case jsonNull:
				v.required = true
			case jsonString, jsonNumber, jsonBool:
				v.raw, _ = m.val.scalarText(lg.src)
				v.set = true
				v.rawRng = m.val.rng.Ptr()
				v.rawSrc = lg.src
			default:
				lg.errorf(m.val.rng, "Invalid variable default", "The default of variable %q must be a string (or null to make the variable required), not %s: legacy template variables are strings.", m.key, m.val.kind)
			}
		}
	}
	given := func(name, value, from string, rng *hcl.Range, src []byte) {
		v := vs.byName[name]
		if v == nil {
			v = &legacyVar{name: name}
			vs.byName[name] = v
			w := hcl.Range{}
			if rng != nil {
				w = *rng
			}
			lg.warnf(w, "Undeclared variable", "The variable %q is given (%s) but the template's \"variables\" section does not declare it; templates can still use it with {{user `%s`}}.", name, from, name)
		}
		v.raw, v.set, v.from, v.rawRng, v.rawSrc = value, true, from, rng, src
	}
	seen := map[string]bool{}
	for _, vf := range lg.l.opts.VarFiles {
		b, ok := varFiles[vf]
		if !ok || seen[vf] {
			continue
		}
		seen[vf] = true
		lg.readVarFile(vf, b, given)
	}
	keys := make([]string, 0, len(lg.l.opts.Vars))
	for k := range lg.l.opts.Vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		given(k, lg.l.opts.Vars[k], "var", nil, nil)
	}

	if n := lg.section("sensitive-variables", jsonArray); n != nil {
		for _, e := range n.elems {
			switch {
			case e.kind != jsonString:
				lg.errorf(e.rng, "Invalid sensitive variable", "\"sensitive-variables\" lists variable names; this entry is %s.", e.kind)
			case vs.byName[e.str] == nil || !vs.byName[e.str].declared:
				lg.errorf(e.rng, "Unknown sensitive variable", "%q is listed in \"sensitive-variables\" but is not declared in \"variables\".", e.str)
			default:
				vs.byName[e.str].sensitive = true
			}
		}
	}

	for _, n := range vs.names() {
		if v := vs.byName[n]; v.required && !v.set {
			lg.errorf(v.keyRng, "Missing required variable", "required variable %q is not set: its default is null, so give it with -var %s=VALUE or a var file.", n, n)
			v.done = true
		}
	}
	lg.resolveVariables(vs)
	return vs
}

// resolveVariables renders the variables' values. A value may use
// {{user}} of another variable, so rendering repeats while it makes
// progress; what is left refers to itself.
func (lg *legacyLoad) resolveVariables(vs *legacyVars) {
	env := &tmplEnv{
		section:     "variables",
		user:        vs.lookup,
		env:         lg.l.opts.Env,
		envAllowed:  true,
		now:         lg.l.opts.now(),
		newUUID:     lg.l.opts.newUUID,
		templateDir: path.Dir(lg.file),
		budget:      &lg.budget,
	}
	pending := map[string]string{} // name -> variable it waits for
	for _, n := range vs.names() {
		if !vs.byName[n].done {
			pending[n] = ""
		}
	}
	for progress := true; progress && len(pending) > 0; {
		progress = false
		for _, n := range vs.names() {
			if _, ok := pending[n]; !ok {
				continue
			}
			v := vs.byName[n]
			out, errs := env.render(v.raw)
			wait := ""
			var real []tmplError
			for _, e := range errs {
				if e.notReady != "" {
					wait = e.notReady
				} else {
					real = append(real, e)
				}
			}
			switch {
			case len(real) > 0:
				for _, e := range real {
					lg.varError(v, e.summary, e.detail, e.start, e.end)
				}
				v.done = true
			case wait != "":
				pending[n] = wait
				continue
			default:
				v.value, v.done = out, true
			}
			delete(pending, n)
			progress = true
		}
	}
	for _, n := range vs.names() {
		if wait, ok := pending[n]; ok {
			v := vs.byName[n]
			lg.varError(v, "Variable refers to itself", fmt.Sprintf("its value uses {{user `%s`}}, which depends on %q in turn.", wait, n), 0, len(v.raw))
			v.done = true
		}
	}
}

// varError reports a problem in the value of v at the value's offsets.
func (lg *legacyLoad) varError(v *legacyVar, summary, detail string, start, end int) {
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf("Variable %q: %s", v.name, detail)}
	if v.rawRng != nil {
		d.Subject = innerRange(v.rawSrc, *v.rawRng, v.raw, start, end).Ptr()
	} else {
		d.Detail = fmt.Sprintf("The -var value of %q: %s", v.name, detail)
	}
	lg.diags = append(lg.diags, d)
}

// readVarFile reads a var file: JSON, as Packer takes for legacy templates
// ({"name": "value"}), or HCL (*.pkrvars.hcl: name = "value"), which kiln
// accepts as well so that one var file can serve both template formats.
func (lg *legacyLoad) readVarFile(name string, b []byte, given func(name, value, from string, rng *hcl.Range, src []byte)) {
	var (
		f     *hcl.File
		diags hcl.Diagnostics
	)
	if strings.HasSuffix(name, ".json") || (!strings.HasSuffix(name, ".hcl") && bytes.HasPrefix(bytes.TrimSpace(b), []byte("{"))) {
		if d := jsonSyntaxError(b, name); d != nil {
			lg.l.parser.AddFile(name, &hcl.File{Body: hcl.EmptyBody(), Bytes: b})
			d.Detail = strings.Replace(d.Detail, "The template is not", "The var file is not", 1)
			lg.diags = append(lg.diags, d)
			return
		}
		f, diags = lg.l.parser.ParseJSON(b, name)
	} else {
		f, diags = lg.l.parser.ParseHCL(b, name)
	}
	lg.diags = append(lg.diags, diags...)
	if diags.HasErrors() || f == nil {
		return
	}
	attrs, diags := f.Body.JustAttributes()
	lg.diags = append(lg.diags, diags...)
	list := make([]*hcl.Attribute, 0, len(attrs))
	for _, a := range attrs {
		list = append(list, a)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Range.Start.Byte < list[j].Range.Start.Byte })
	for _, a := range list {
		// No evaluation context: var files hold plain values; a JSON
		// string is taken verbatim and rendered as a template later.
		val, diags := a.Expr.Value(nil)
		lg.diags = append(lg.diags, diags...)
		if diags.HasErrors() {
			continue
		}
		s, ok := ctyText(val)
		if !ok {
			lg.errorf(a.Expr.Range(), "Invalid variable value", "The value of %q must be a string, number or boolean: legacy template variables are strings.", a.Name)
			continue
		}
		given(a.Name, s, "var-file", a.Expr.Range().Ptr(), b)
	}
}
