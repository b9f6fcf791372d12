package bake

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// This file loads legacy JSON templates: Packer's pre-HCL2 format with
// "variables", "builders", "provisioners" and "post-processors"
// (https://developer.hashicorp.com/packer/docs/templates/legacy_json_templates).
//
// Loading goes in four steps:
//  1. encoding/json checks the syntax first, because it stops at the exact
//     byte that is wrong (hcl/v2/json recovers and may point a token
//     later); then hcl/v2/json parses the template into a tree of values
//     with their ranges (legacy_json.go).
//  2. The variables are evaluated (legacy_vars.go): defaults, var files,
//     -var, each rendered with the template engine (legacy_template.go).
//  3. For each builder, every string of the builder, of the provisioners
//     and post-processors that apply to it, is rendered for that build
//     ({{build_name}} differs) and written back into a copy of the source
//     as a JSON string literal of printable ASCII on one line. The copy
//     has the same lines as the template; only bytes and columns after a
//     rendered literal move, and renderedDoc knows by how much.
//  4. hcl/v2/json parses each builder, provisioner and post-processor
//     object of the copy into an hcl.Body, which the decoders of schema.go
//     (shared with the HCL2 loader, with a nil EvalContext so that strings
//     stay literal) turn into the Plan. Their diagnostics are mapped back
//     onto the template as the user wrote it, column for column.
//
// Differences from Packer, on purpose:
//   - {{env}} reads LoadOptions.Env, never the process environment.
//   - PKR_VAR_name is not read: Packer reads it for HCL2 templates only,
//     and a legacy template gets its environment through {{env}} in
//     variable defaults.
//   - {{user `x`}} for a variable the template does not declare (and no
//     -var gives) is an error; Packer silently renders "".
//   - A -var or var-file variable the template does not declare is usable,
//     as in Packer, with a warning (it is most often a typo).
//   - Var files may be JSON (Packer's legacy format) or HCL (*.pkrvars.hcl).
//   - description and min_packer_version are checked to be strings and
//     otherwise ignored: kiln is not Packer and has no Packer version.

// legacySections are the keys a legacy template may have at its root.
var legacySections = []string{
	"variables", "sensitive-variables", "builders", "provisioners",
	"error-cleanup-provisioner", "post-processors", "description", "min_packer_version",
}

// legacyLoad is the state of one legacy template load.
type legacyLoad struct {
	l    *loader
	file string
	src  []byte
	// sections are the root keys, by name.
	sections map[string]*jsonNode
	// budget is what the template's strings may still render to, in bytes.
	budget int
	vars   *legacyVars
	diags  hcl.Diagnostics
}

// legacyBuilder is one entry of "builders".
type legacyBuilder struct {
	name, typ string
	typeRng   hcl.Range
	node      *jsonNode
}

// legacyProv is one entry of "provisioners" (or the error-cleanup-provisioner).
type legacyProv struct {
	typ          string
	typeRng      hcl.Range
	node         *jsonNode
	only, except []string
	// override holds the per-builder overrides, by builder name.
	override map[string]*jsonNode
}

// legacyPP is one post-processor, after flattening sequences.
type legacyPP struct {
	typ          string
	typeRng      hcl.Range
	node         *jsonNode // nil for the "manifest" string form
	only, except []string
}

func (l *loader) loadLegacy(file string, varFiles map[string][]byte) (*Plan, hcl.Diagnostics) {
	src, err := fs.ReadFile(l.fsys, file)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read template",
			Detail:   fmt.Sprintf("Reading %s: %v.", file, err),
		}}
	}
	l.read[file] = true
	if d := jsonSyntaxError(src, file); d != nil {
		// encoding/json stops at the first wrong byte (and at absurd
		// nesting); hcl/v2/json recovers and may point a token later.
		// Report the exact spot, as Packer does.
		l.parser.AddFile(file, &hcl.File{Body: hcl.EmptyBody(), Bytes: src})
		return nil, hcl.Diagnostics{d}
	}
	// Parsing through the loader's parser keeps the original source for
	// the snippets under every diagnostic.
	_, diags := l.parser.ParseJSON(src, file)
	if diags.HasErrors() {
		return nil, diags
	}
	root, diags := parseJSONTree(src, file)
	if diags.HasErrors() {
		return nil, diags
	}
	lg := &legacyLoad{l: l, file: file, src: src, sections: map[string]*jsonNode{}, budget: maxRenderedTotal}
	if root.kind != jsonObject {
		lg.errorf(root.rng, "Invalid template", "A legacy JSON template is an object with builders, provisioners and so on; this file holds %s.", root.kind)
		return nil, lg.diags
	}
	lg.readSections(root)
	lg.vars = lg.loadVariables(varFiles)
	builders := lg.readBuilders()
	names := map[string]bool{}
	for _, b := range builders {
		names[b.name] = true
	}
	var provs []*legacyProv
	if n := lg.section("provisioners", jsonArray); n != nil {
		for _, e := range n.elems {
			if p := lg.readProv(e, "provisioner", names); p != nil {
				provs = append(provs, p)
			}
		}
	}
	var cleanup *legacyProv
	if n := lg.sections["error-cleanup-provisioner"]; n != nil {
		cleanup = lg.readProv(n, "error-cleanup-provisioner", names)
	}
	pps := lg.readPostProcessors(names)
	lg.section("description", jsonString)
	lg.section("min_packer_version", jsonString)
	// Go on after errors so far: every problem is reported at once. A
	// variable that failed renders as "".

	plan := &Plan{
		Name:      l.name,
		Format:    "json",
		Variables: lg.vars.planVariables(),
		Sensitive: lg.vars.sensitiveValues(),
		Builds:    []Build{},
	}
	seen := map[string]bool{}
	for _, b := range builders {
		build, diags := lg.build(b, provs, cleanup, pps)
		for _, d := range diags {
			// A provisioner or post-processor is decoded once per build:
			// report each of its problems once.
			if k := diagKey(d); !seen[k] {
				seen[k] = true
				lg.diags = append(lg.diags, d)
			}
		}
		if build != nil {
			plan.Builds = append(plan.Builds, *build)
		}
	}
	if lg.diags.HasErrors() {
		return nil, sortedDiags(lg.diags)
	}
	for f := range l.read {
		plan.Files = append(plan.Files, f)
	}
	sort.Strings(plan.Files)
	hash, err := legacyPlanHash(l.fsys, plan.Files, l.opts, varFiles)
	if err != nil {
		lg.errorf(hcl.Range{}, "Cannot hash recipe", "%v.", err)
		return nil, lg.diags
	}
	plan.Hash = hash
	return plan, sortedDiags(lg.diags)
}

// sortedDiags orders diagnostics by file and position, those without a
// position first, so that a user reads them top to bottom.
func sortedDiags(diags hcl.Diagnostics) hcl.Diagnostics {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		}
		return a.Start.Byte < b.Start.Byte
	})
	return diags
}

func diagKey(d *hcl.Diagnostic) string {
	k := fmt.Sprintf("%d\x00%s\x00%s", d.Severity, d.Summary, d.Detail)
	if d.Subject != nil {
		k += "\x00" + d.Subject.String()
	}
	return k
}

func (lg *legacyLoad) errorf(rng hcl.Range, summary, format string, args ...any) {
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...)}
	if rng.Filename != "" {
		d.Subject = rng.Ptr()
	}
	lg.diags = append(lg.diags, d)
}

func (lg *legacyLoad) warnf(rng hcl.Range, summary, format string, args ...any) {
	d := &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: fmt.Sprintf(format, args...)}
	if rng.Filename != "" {
		d.Subject = rng.Ptr()
	}
	lg.diags = append(lg.diags, d)
}

// readSections sorts the root keys into sections; unknown keys are errors.
func (lg *legacyLoad) readSections(root *jsonNode) {
	for _, m := range root.members {
		switch {
		case strings.HasPrefix(m.key, "_"):
			// Packer's comments: root keys starting with "_" are ignored.
			continue
		case lg.sections[m.key] != nil:
			lg.errorf(m.keyRng, "Duplicate template section", "The template has more than one %q.", m.key)
			continue
		}
		known := false
		for _, s := range legacySections {
			known = known || s == m.key
		}
		if !known {
			detail := fmt.Sprintf("A legacy template has the sections %s, and comments in root keys that start with \"_\"; %q is not one of them.", strings.Join(legacySections, ", "), m.key)
			if m.key == "push" {
				detail = `"push" sent builds to Atlas, which Packer removed; kiln has no equivalent. Remove the section.`
			}
			lg.errorf(m.keyRng, "Unsupported template section", "%s", detail)
			continue
		}
		lg.sections[m.key] = m.val
	}
}

// section returns the section name if present and of kind, or reports it.
func (lg *legacyLoad) section(name string, kind jsonKind) *jsonNode {
	n := lg.sections[name]
	if n == nil {
		return nil
	}
	if n.kind != kind {
		lg.errorf(n.rng, "Invalid template section", "%q must be %s, not %s.", name, kind, n.kind)
		return nil
	}
	return n
}

// stringMember returns the string value of key in object n, reporting a
// value of another kind. required reports a missing key.
func (lg *legacyLoad) stringMember(n *jsonNode, key, what string, required bool) (string, hcl.Range, bool) {
	v := n.member(key)
	if v == nil {
		if required {
			lg.errorf(n.rng, "Missing "+key, "Every %s needs a %q.", what, key)
		}
		return "", hcl.Range{}, false
	}
	if v.kind != jsonString {
		lg.errorf(v.rng, "Invalid "+key, "The %q of a %s must be a string, not %s.", key, what, v.kind)
		return "", v.rng, false
	}
	return v.str, v.rng, true
}

// stringList reads only/except: a list of builder names that must exist.
func (lg *legacyLoad) stringList(n *jsonNode, key, what string, builders map[string]bool) []string {
	v := n.member(key)
	if v == nil {
		return nil
	}
	if v.kind != jsonArray {
		lg.errorf(v.rng, "Invalid "+key, "The %q of a %s must be a list of builder names, not %s.", key, what, v.kind)
		return nil
	}
	out := []string{}
	for _, e := range v.elems {
		if e.kind != jsonString {
			lg.errorf(e.rng, "Invalid "+key, "The %q of a %s must be a list of builder names; this entry is %s.", key, what, e.kind)
			continue
		}
		if !builders[e.str] {
			lg.errorf(e.rng, "Unknown builder in "+key, "%q names no builder of this template; builders are named by their \"name\", or by their \"type\" when they have none: %s.", e.str, quotedNames(builders))
			continue
		}
		out = append(out, e.str)
	}
	return out
}

func quotedNames(set map[string]bool) string {
	var names []string
	for n := range set {
		names = append(names, fmt.Sprintf("%q", n))
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

func (lg *legacyLoad) readBuilders() []legacyBuilder {
	n := lg.sections["builders"]
	if n == nil {
		lg.errorf(hcl.Range{Filename: lg.file, Start: hcl.InitialPos, End: hcl.InitialPos}, "No builders", "A template needs at least one builder of type \"amazon-ebs\".")
		return nil
	}
	if n = lg.section("builders", jsonArray); n == nil {
		return nil
	}
	if len(n.elems) == 0 {
		lg.errorf(n.rng, "No builders", "A template needs at least one builder of type \"amazon-ebs\".")
	}
	var out []legacyBuilder
	seen := map[string]bool{}
	for _, e := range n.elems {
		if e.kind != jsonObject {
			lg.errorf(e.rng, "Invalid builder", "Each builder must be an object, not %s.", e.kind)
			continue
		}
		typ, typeRng, ok := lg.stringMember(e, "type", "builder", true)
		if !ok {
			continue
		}
		name, nameRng, hasName := lg.stringMember(e, "name", "builder", false)
		if !hasName {
			if e.member("name") != nil {
				continue
			}
			name, nameRng = typ, typeRng
		}
		if seen[name] {
			lg.errorf(nameRng, "Duplicate builder name", "Another builder is already named %q; give each builder a distinct \"name\".", name)
			continue
		}
		seen[name] = true
		if typ != "amazon-ebs" {
			lg.errorf(typeRng, "Unsupported builder", "kiln bakes AMIs with Packer's \"amazon-ebs\" builder only; builder type %q is not supported.", typ)
		}
		out = append(out, legacyBuilder{name: name, typ: typ, typeRng: typeRng, node: e})
	}
	return out
}

// readProv reads the fields of a provisioner that the legacy format keeps
// outside its configuration: type, only, except and override.
func (lg *legacyLoad) readProv(n *jsonNode, what string, builders map[string]bool) *legacyProv {
	if n.kind != jsonObject {
		lg.errorf(n.rng, "Invalid "+what, "A %s must be an object, not %s.", what, n.kind)
		return nil
	}
	typ, typeRng, ok := lg.stringMember(n, "type", what, true)
	if !ok {
		return nil
	}
	p := &legacyProv{typ: typ, typeRng: typeRng, node: n}
	p.only = lg.stringList(n, "only", what, builders)
	p.except = lg.stringList(n, "except", what, builders)
	if n.member("only") != nil && n.member("except") != nil {
		lg.errorf(n.member("except").rng, "Both only and except", "A %s may have \"only\" or \"except\", not both.", what)
	}
	if o := n.member("override"); o != nil {
		if o.kind != jsonObject {
			lg.errorf(o.rng, "Invalid override", "\"override\" must be an object keyed by builder name, not %s.", o.kind)
			return p
		}
		p.override = map[string]*jsonNode{}
		for _, m := range o.members {
			switch {
			case !builders[m.key]:
				lg.errorf(m.keyRng, "Unknown builder in override", "%q names no builder of this template; builders are named by their \"name\", or by their \"type\" when they have none: %s.", m.key, quotedNames(builders))
			case m.val.kind != jsonObject:
				lg.errorf(m.val.rng, "Invalid override", "The override for %q must be an object of options, not %s.", m.key, m.val.kind)
			default:
				p.override[m.key] = m.val
			}
		}
	}
	return p
}

// readPostProcessors flattens "post-processors": each entry is a type name,
// an object, or a sequence (array) of those.
func (lg *legacyLoad) readPostProcessors(builders map[string]bool) []legacyPP {
	n := lg.section("post-processors", jsonArray)
	if n == nil {
		return nil
	}
	var out []legacyPP
	var one func(e *jsonNode, nested bool)
	one = func(e *jsonNode, nested bool) {
		switch e.kind {
		case jsonString:
			out = append(out, legacyPP{typ: e.str, typeRng: e.rng})
		case jsonObject:
			typ, typeRng, ok := lg.stringMember(e, "type", "post-processor", true)
			if !ok {
				return
			}
			pp := legacyPP{typ: typ, typeRng: typeRng, node: e}
			pp.only = lg.stringList(e, "only", "post-processor", builders)
			pp.except = lg.stringList(e, "except", "post-processor", builders)
			if e.member("only") != nil && e.member("except") != nil {
				lg.errorf(e.member("except").rng, "Both only and except", "A post-processor may have \"only\" or \"except\", not both.")
			}
			out = append(out, pp)
		case jsonArray:
			if nested {
				lg.errorf(e.rng, "Invalid post-processor", "A post-processor sequence cannot hold another sequence.")
				return
			}
			for _, x := range e.elems {
				one(x, true)
			}
		default:
			lg.errorf(e.rng, "Invalid post-processor", "A post-processor is a type name, an object or a sequence of those, not %s.", e.kind)
		}
	}
	for _, e := range n.elems {
		one(e, false)
	}
	return out
}

// applies reports whether a step with only/except runs for build name.
func applies(only, except []string, name string) bool {
	in := func(list []string) bool {
		for _, s := range list {
			if s == name {
				return true
			}
		}
		return false
	}
	if only != nil && !in(only) {
		return false
	}
	return !in(except)
}

// build renders and decodes everything of one builder's build.
func (lg *legacyLoad) build(b legacyBuilder, provs []*legacyProv, cleanup *legacyProv, pps []legacyPP) (*Build, hcl.Diagnostics) {
	if b.typ != "amazon-ebs" {
		return nil, nil
	}
	var (
		diags   hcl.Diagnostics
		splices []splice
	)
	envFor := func(section string) *tmplEnv {
		return &tmplEnv{
			section:     section,
			user:        lg.vars.lookup,
			env:         lg.l.opts.Env,
			now:         lg.l.opts.now(),
			newUUID:     lg.l.opts.newUUID,
			buildName:   b.name,
			buildType:   b.typ,
			templateDir: path.Dir(lg.file),
			budget:      &lg.budget,
		}
	}
	r := &legacyRenderer{src: lg.src}
	r.object(b.node, envFor("builders"), "type", "name")
	var stepProvs []*legacyProv
	for _, p := range provs {
		if applies(p.only, p.except, b.name) {
			stepProvs = append(stepProvs, p)
		}
	}
	if cleanup != nil && !applies(cleanup.only, cleanup.except, b.name) {
		cleanup = nil
	}
	for _, p := range append(append([]*legacyProv(nil), stepProvs...), cleanup) {
		if p == nil {
			continue
		}
		env := envFor("provisioners")
		r.object(p.node, env, "type", "only", "except", "override")
		if o := p.override[b.name]; o != nil {
			r.object(o, env)
		}
	}
	var stepPPs []legacyPP
	for _, pp := range pps {
		if !applies(pp.only, pp.except, b.name) {
			continue
		}
		stepPPs = append(stepPPs, pp)
		if pp.node != nil {
			r.object(pp.node, envFor("post-processors"), "type", "only", "except")
		}
	}
	diags = append(diags, r.diags...)
	splices = r.splices
	if diags.HasErrors() {
		return nil, diags
	}
	doc := newRenderedDoc(lg.file, lg.src, splices)

	build := &Build{Name: b.name, Type: b.typ}
	var decodeDiags hcl.Diagnostics
	body, d := doc.body(b.node)
	decodeDiags = append(decodeDiags, d...)
	body, d = strip(body, "type", "name")
	decodeDiags = append(decodeDiags, d...)
	src, d := decodeSource([]hcl.Body{body}, nil, lg.l.fsys, lg.l.read)
	decodeDiags = append(decodeDiags, d...)
	build.Source = src

	decodeProv := func(p *legacyProv) (Provisioner, bool) {
		body, d := doc.body(p.node)
		decodeDiags = append(decodeDiags, d...)
		hide := []string{"type", "only", "except", "override"}
		var parts []hcl.Body
		if o := p.override[b.name]; o != nil {
			// The override's options replace the provisioner's own for
			// this builder.
			for _, m := range o.members {
				hide = append(hide, m.key)
			}
			ob, d := doc.body(o)
			decodeDiags = append(decodeDiags, d...)
			parts = append(parts, ob)
		}
		body, d = strip(body, hide...)
		decodeDiags = append(decodeDiags, d...)
		if len(parts) > 0 {
			body = hcl.MergeBodies(append([]hcl.Body{body}, parts...))
		}
		decl := doc.renderedRange(p.typeRng)
		prov, _, _, d := decodeProvisioner(p.typ, decl, body, nil, lg.l.fsys, lg.l.read)
		decodeDiags = append(decodeDiags, d...)
		return prov, !d.HasErrors()
	}
	for _, p := range stepProvs {
		if prov, ok := decodeProv(p); ok {
			build.Provisioners = append(build.Provisioners, prov)
		}
	}
	if cleanup != nil {
		if prov, ok := decodeProv(cleanup); ok {
			build.ErrorCleanup = &prov
		}
	}
	for _, pp := range stepPPs {
		body := hcl.EmptyBody()
		if pp.node != nil {
			var d hcl.Diagnostics
			body, d = doc.body(pp.node)
			decodeDiags = append(decodeDiags, d...)
			body, d = strip(body, "type", "only", "except")
			decodeDiags = append(decodeDiags, d...)
		}
		out, d := decodePostProcessor(pp.typ, doc.renderedRange(pp.typeRng), body, nil)
		decodeDiags = append(decodeDiags, d...)
		if !d.HasErrors() {
			build.PostProcessors = append(build.PostProcessors, out)
		}
	}
	diags = append(diags, doc.origDiags(decodeDiags)...)
	if diags.HasErrors() {
		return nil, diags
	}
	return build, diags
}

// strip hides the attributes names of a JSON body: the keys the legacy
// format keeps beside a component's own options.
func strip(body hcl.Body, names ...string) (hcl.Body, hcl.Diagnostics) {
	schema := &hcl.BodySchema{}
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			schema.Attributes = append(schema.Attributes, hcl.AttributeSchema{Name: n})
		}
	}
	_, remain, diags := body.PartialContent(schema)
	return remain, diags
}

// legacyRenderer renders the strings of parts of the template.
type legacyRenderer struct {
	src     []byte
	splices []splice
	diags   hcl.Diagnostics
}

// object renders the members of object n, except the values of skip.
func (r *legacyRenderer) object(n *jsonNode, env *tmplEnv, skip ...string) {
	for _, m := range n.members {
		skipped := false
		for _, s := range skip {
			skipped = skipped || s == m.key
		}
		if skipped {
			continue
		}
		r.value(m.val, env)
	}
}

func (r *legacyRenderer) value(n *jsonNode, env *tmplEnv) {
	switch n.kind {
	case jsonString:
		r.str(n.str, n.rng, env)
	case jsonArray:
		for _, e := range n.elems {
			r.value(e, env)
		}
	case jsonObject:
		// Keys are rendered too: tag names may hold {{...}}, as Packer
		// renders both sides of a tag.
		for _, m := range n.members {
			r.str(m.key, m.keyRng, env)
			r.value(m.val, env)
		}
	}
}

func (r *legacyRenderer) str(s string, rng hcl.Range, env *tmplEnv) {
	out, errs := env.render(s)
	for _, e := range errs {
		r.diags = append(r.diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  e.summary,
			Detail:   e.detail,
			Subject:  innerRange(r.src, rng, s, e.start, e.end).Ptr(),
		})
	}
	if len(errs) == 0 && out != s {
		r.splices = append(r.splices, splice{orig: rng, lit: jsonLiteral(out)})
	}
}

// legacyPlanHash is the content hash of the template and the files it
// refers to, combined with the variable values given to the build (var
// files and -var), so that the same recipe with other inputs differs.
func legacyPlanHash(fsys fs.FS, files []string, opts LoadOptions, varFiles map[string][]byte) (string, error) {
	content, err := ContentHash(fsys, files)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	var n [8]byte
	put := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put("kiln legacy plan v1")
	put(content)
	seen := map[string]bool{}
	for _, vf := range opts.VarFiles {
		if b, ok := varFiles[vf]; ok && !seen[vf] {
			seen[vf] = true
			put("var-file")
			// The name, not the host path: the same inputs from another
			// folder are the same recipe.
			put(path.Base(vf))
			put(string(b))
		}
	}
	keys := make([]string, 0, len(opts.Vars))
	for k := range opts.Vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		put("var")
		put(k)
		put(opts.Vars[k])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// jsonStringValue encodes s as a JSON value for Variable.Value, as
// go-cty's JSON encoding of a string does for the HCL2 loader.
func jsonStringValue(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// ctyText turns a var-file value into the string a legacy variable holds.
func ctyText(v cty.Value) (string, bool) {
	if v.IsNull() || !v.IsKnown() {
		return "", false
	}
	switch v.Type() {
	case cty.String:
		return v.AsString(), true
	case cty.Number:
		return numberText(v), true
	case cty.Bool:
		if v.True() {
			return "true", true
		}
		return "false", true
	}
	return "", false
}
