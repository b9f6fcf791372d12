package bake

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// This file reads the input variables and local values of an HCL2 recipe,
// as Packer does: variable blocks (and the older variables { } block) with
// type, default, description, sensitive, nullable and validation; values
// from defaults, PKR_VAR_name, *.auto.pkrvars.hcl files, -var-file and -var,
// each overriding the ones before; then locals and local blocks, in the
// order their references need.

// Where a variable's value came from, in increasing precedence.
const (
	fromDefault     = "default"
	fromEnv         = "env"
	fromAutoVarFile = "auto-var-file"
	fromVarFile     = "var-file"
	fromVar         = "var"
)

// inputVariable is one declared variable.
type inputVariable struct {
	name string
	decl hcl.Range
	// ty is the type constraint; cty.DynamicPseudoType when none is given.
	ty       cty.Type
	typeStr  string
	defaults *typeexpr.Defaults
	// def is the default; cty.NilVal when the variable has none (required).
	def         cty.Value
	description string
	sensitive   bool
	nullable    bool
	validations []*hcl.Block

	value cty.Value
	from  string
	// valueRange is where value was set, for diagnostics about it.
	valueRange hcl.Range
}

var variableBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "description"}, {Name: "default"}, {Name: "type"}, {Name: "sensitive"}, {Name: "nullable"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "validation"}},
}

var validationBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "condition", Required: true}, {Name: "error_message", Required: true}},
}

// declareVariable reads a variable "name" { ... } block. defCtx evaluates
// defaults: functions (with env) but no variables, as in Packer.
func (h *hcl2Load) declareVariable(block *hcl.Block, defCtx *hcl.EvalContext) {
	name := block.Labels[0]
	if !h.checkVarName(name, block.LabelRanges[0]) {
		return
	}
	v := &inputVariable{name: name, decl: block.DefRange, ty: cty.DynamicPseudoType, nullable: true}
	content, diags := block.Body.Content(variableBlockSchema)
	h.diags = append(h.diags, diags...)
	d := &valueDecoder{}
	if a := content.Attributes["type"]; a != nil {
		ty, defaults, diags := typeexpr.TypeConstraintWithDefaults(a.Expr)
		h.diags = append(h.diags, diags...)
		if !diags.HasErrors() {
			v.ty, v.defaults, v.typeStr = ty, defaults, typeexpr.TypeString(ty)
		}
	}
	v.description = d.str(content.Attributes["description"])
	v.sensitive = d.boolean(content.Attributes["sensitive"])
	if a := content.Attributes["nullable"]; a != nil {
		v.nullable = d.boolean(a)
	}
	h.diags = append(h.diags, d.diags...)
	if a := content.Attributes["default"]; a != nil {
		val, diags := a.Expr.Value(defCtx)
		h.diags = append(h.diags, diags...)
		if !diags.HasErrors() {
			v.def = h.convertVar(v, val, a.Expr.Range(), "default")
		} else {
			v.def = poisoned(cty.DynamicPseudoType)
		}
	}
	for _, b := range content.Blocks {
		_, diags := b.Body.Content(validationBlockSchema)
		h.diags = append(h.diags, diags...)
		if !diags.HasErrors() {
			v.validations = append(v.validations, b)
		}
	}
	h.addVariable(v)
}

// declareVariables reads the older variables { name = default } block.
func (h *hcl2Load) declareVariables(block *hcl.Block, defCtx *hcl.EvalContext) {
	attrs, diags := block.Body.JustAttributes()
	h.diags = append(h.diags, diags...)
	for _, a := range sortedAttrs(attrs) {
		if !h.checkVarName(a.Name, a.NameRange) {
			continue
		}
		v := &inputVariable{name: a.Name, decl: a.Range, ty: cty.DynamicPseudoType, nullable: true}
		val, diags := a.Expr.Value(defCtx)
		h.diags = append(h.diags, diags...)
		v.def = val
		if diags.HasErrors() {
			v.def = poisoned(cty.DynamicPseudoType)
		}
		h.addVariable(v)
	}
}

func (h *hcl2Load) checkVarName(name string, rng hcl.Range) bool {
	if !hclsyntax.ValidIdentifier(name) {
		h.errorf(rng, "Invalid variable name", "%q is not a valid name: use letters, digits, underscores and dashes, starting with a letter.", name)
		return false
	}
	return true
}

func (h *hcl2Load) addVariable(v *inputVariable) {
	if prev, dup := h.vars[v.name]; dup {
		h.errorf(v.decl, "Duplicate variable", "Variable %q is already declared at %s.", v.name, prev.decl)
		return
	}
	h.vars[v.name] = v
}

// convertVar applies a variable's type constraint (and its optional
// attributes' defaults) to val.
func (h *hcl2Load) convertVar(v *inputVariable, val cty.Value, rng hcl.Range, what string) cty.Value {
	if v.defaults != nil {
		val = v.defaults.Apply(val)
	}
	out, err := convert.Convert(val, v.ty)
	if err != nil {
		h.errorf(rng, "Invalid value for variable", "The %s of variable %q does not match its type %s: %s.", what, v.name, v.typeStr, convertError(err))
		return poisoned(v.ty)
	}
	return out
}

// setValues gives every variable its value: default < PKR_VAR_name <
// auto var files < -var-file (in order) < -var.
func (h *hcl2Load) setValues(autoVarFiles []*hcl.File, varFiles []*hcl.File) {
	for _, v := range h.vars {
		if v.def != cty.NilVal {
			v.value, v.from, v.valueRange = v.def, fromDefault, v.decl
		}
	}
	for _, name := range sortedKeys(h.l.opts.Env) {
		n, ok := strings.CutPrefix(name, "PKR_VAR_")
		v := h.vars[n]
		if !ok || v == nil {
			continue // as in Packer: the environment may hold anything
		}
		h.setFromString(v, h.l.opts.Env[name], fromEnv, fmt.Sprintf("<value for var.%s from env>", n))
	}
	for _, f := range autoVarFiles {
		h.setFromFile(f, fromAutoVarFile)
	}
	for _, f := range varFiles {
		h.setFromFile(f, fromVarFile)
	}
	for _, name := range sortedKeys(h.l.opts.Vars) {
		v := h.vars[name]
		if v == nil {
			h.errorf(hcl.Range{}, "Undefined -var variable",
				"A %q variable was passed with -var but is not declared. To declare it, add a block to one of the .pkr.hcl files, such as variables.pkr.hcl:\n\nvariable %q {\n  type = string\n}", name, name)
			continue
		}
		h.setFromString(v, h.l.opts.Vars[name], fromVar, fmt.Sprintf("<value for var.%s from -var>", name))
	}
}

// setFromString sets a variable from a -var or PKR_VAR_ string: taken
// literally for strings, numbers and untyped variables, parsed as an HCL
// expression otherwise, as Packer does.
func (h *hcl2Load) setFromString(v *inputVariable, s, from, filename string) {
	var val cty.Value
	rng := hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos}
	switch v.ty {
	case cty.String, cty.Number, cty.DynamicPseudoType:
		val = cty.StringVal(s)
	default:
		expr, diags := hclsyntax.ParseExpression([]byte(s), filename, hcl.InitialPos)
		if !diags.HasErrors() {
			val, diags = expr.Value(nil)
		}
		if diags.HasErrors() {
			h.errorf(v.decl, "Invalid value for variable", "The value given for %q (%s) is not a valid %s: %s", v.name, from, v.typeStr, strings.TrimSpace(diags.Error()))
			v.value, v.from = poisoned(v.ty), from
			return
		}
	}
	v.value, v.from, v.valueRange = h.convertVar(v, val, v.decl, "value from "+from), from, rng
}

// setFromFile applies a var file (auto or -var-file).
func (h *hcl2Load) setFromFile(f *hcl.File, from string) {
	// A variable block in a var file is a common mistake; say so plainly.
	content, _, _ := f.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "variable", LabelNames: []string{"name"}}}})
	if content != nil && len(content.Blocks) > 0 {
		for _, b := range content.Blocks {
			h.errorf(b.DefRange, "Variable declaration in a var file",
				"A var file sets values of variables declared in .pkr.hcl files. To set %q here, write:\n    %s = <value>", b.Labels[0], b.Labels[0])
		}
		return
	}
	attrs, diags := f.Body.JustAttributes()
	h.diags = append(h.diags, diags...)
	for _, a := range sortedAttrs(attrs) {
		v := h.vars[a.Name]
		if v == nil {
			h.diags = append(h.diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Undefined variable",
				Detail:   fmt.Sprintf("The variable %q is set but not declared; the value is not used. Declare it in a .pkr.hcl file with a variable %q { } block.", a.Name, a.Name),
				Subject:  a.NameRange.Ptr(),
			})
			continue
		}
		val, diags := a.Expr.Value(nil)
		h.diags = append(h.diags, diags...)
		if diags.HasErrors() {
			v.value, v.from = poisoned(v.ty), from
			continue
		}
		v.value, v.from, v.valueRange = h.convertVar(v, val, a.Expr.Range(), "value"), from, a.Expr.Range()
	}
}

// checkValues reports variables without a value and null values of
// non-nullable variables, then runs the validation blocks.
func (h *hcl2Load) checkValues(ctx *hcl.EvalContext) {
	for _, v := range h.sortedVars() {
		switch {
		case v.value == cty.NilVal:
			h.errorf(v.decl, "Unset variable "+fmt.Sprintf("%q", v.name),
				"The variable %q has no default and no value: set it with -var %s=..., a var file, or the PKR_VAR_%s environment variable.", v.name, v.name, v.name)
			v.value = poisoned(v.ty)
		case v.value.IsNull() && !v.nullable:
			h.errorf(v.valueRange, "Null value for variable", "The variable %q is not nullable, and its value is null.", v.name)
		}
	}
	for _, v := range h.sortedVars() {
		if isPoisoned(v.value) {
			continue
		}
		for _, b := range v.validations {
			content, _ := b.Body.Content(validationBlockSchema)
			cond, msg := content.Attributes["condition"], content.Attributes["error_message"]
			ok, diags := cond.Expr.Value(ctx)
			h.diags = append(h.diags, diags...)
			if diags.HasErrors() {
				continue
			}
			ok, _ = ok.UnmarkDeep()
			if ok, err := convert.Convert(ok, cty.Bool); err != nil || ok.IsNull() || !ok.IsKnown() {
				h.errorf(cond.Expr.Range(), "Invalid validation condition", "The condition of a validation of %q must be true or false.", v.name)
				continue
			} else if ok.True() {
				continue
			}
			text := "The value of " + v.name + " is not valid."
			if m, diags := msg.Expr.Value(ctx); !diags.HasErrors() {
				m, _ = m.UnmarkDeep()
				if m, err := convert.Convert(m, cty.String); err == nil && m.IsKnown() && !m.IsNull() {
					text = m.AsString()
				}
			}
			h.diags = append(h.diags, &hcl.Diagnostic{
				Severity:    hcl.DiagError,
				Summary:     "Invalid value for variable",
				Detail:      fmt.Sprintf("%s\n\nThis was checked by the validation rule at %s.", text, b.DefRange),
				Subject:     cond.Expr.Range().Ptr(),
				Expression:  cond.Expr,
				EvalContext: ctx,
			})
		}
	}
}

func (h *hcl2Load) sortedVars() []*inputVariable {
	out := make([]*inputVariable, 0, len(h.vars))
	for _, name := range sortedKeys(h.vars) {
		out = append(out, h.vars[name])
	}
	return out
}

// varObject is the value of var in expressions.
func (h *hcl2Load) varObject() cty.Value {
	vals := map[string]cty.Value{}
	for name, v := range h.vars {
		vals[name] = v.value
		if vals[name] == cty.NilVal {
			vals[name] = poisoned(v.ty)
		}
	}
	return cty.ObjectVal(vals)
}

// planVariables lists the variables for the plan, sensitive values masked,
// and returns the sensitive values for redaction.
func (h *hcl2Load) planVariables() ([]Variable, []string) {
	var (
		out       []Variable
		sensitive []string
	)
	for _, v := range h.sortedVars() {
		pv := Variable{Name: v.name, Type: v.typeStr, Description: v.description, Sensitive: v.sensitive, From: v.from}
		if v.sensitive {
			pv.Value = json.RawMessage(`"<sensitive>"`)
			sensitive = append(sensitive, secretStrings(v.value)...)
		} else {
			pv.Value = ctyJSON(v.value)
		}
		out = append(out, pv)
	}
	return out, sensitive
}

// ctyJSON renders a (known) value as JSON.
func ctyJSON(v cty.Value) json.RawMessage {
	v, _ = v.UnmarkDeep()
	if v == cty.NilVal || !v.IsWhollyKnown() {
		return json.RawMessage("null")
	}
	b, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// secretStrings returns every primitive inside v as text, for redaction.
func secretStrings(v cty.Value) []string {
	v, _ = v.UnmarkDeep()
	var out []string
	_ = cty.Walk(v, func(_ cty.Path, v cty.Value) (bool, error) {
		if v.IsNull() || !v.IsKnown() {
			return true, nil
		}
		switch v.Type() {
		case cty.String:
			if s := v.AsString(); s != "" {
				out = append(out, s)
			}
		case cty.Number:
			out = append(out, v.AsBigFloat().Text('f', -1))
		}
		return true, nil
	})
	return out
}

// Locals.

// localValue is one local, from a locals block or a local block.
type localValue struct {
	name      string
	expr      hcl.Expression
	decl      hcl.Range
	sensitive bool
}

var localBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "expression", Required: true}, {Name: "sensitive"}},
}

func (h *hcl2Load) declareLocals(block *hcl.Block) {
	attrs, diags := block.Body.JustAttributes()
	h.diags = append(h.diags, diags...)
	for _, a := range sortedAttrs(attrs) {
		h.addLocal(&localValue{name: a.Name, expr: a.Expr, decl: a.Range})
	}
}

func (h *hcl2Load) declareLocal(block *hcl.Block) {
	content, diags := block.Body.Content(localBlockSchema)
	h.diags = append(h.diags, diags...)
	a := content.Attributes["expression"]
	if a == nil {
		return
	}
	d := &valueDecoder{}
	lv := &localValue{name: block.Labels[0], expr: a.Expr, decl: block.DefRange, sensitive: d.boolean(content.Attributes["sensitive"])}
	h.diags = append(h.diags, d.diags...)
	if !hclsyntax.ValidIdentifier(lv.name) {
		h.errorf(block.LabelRanges[0], "Invalid local name", "%q is not a valid name.", lv.name)
		return
	}
	h.addLocal(lv)
}

func (h *hcl2Load) addLocal(lv *localValue) {
	if prev, dup := h.localDecls[lv.name]; dup {
		h.errorf(lv.decl, "Duplicate local", "Local %q is already defined at %s.", lv.name, prev.decl)
		return
	}
	h.localDecls[lv.name] = lv
}

// evalLocals evaluates the locals in the order their references need; a
// cycle is an error naming its members. ctx must hold var, data and path;
// local is added as locals are evaluated.
func (h *hcl2Load) evalLocals(ctx *hcl.EvalContext) {
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	vals := map[string]cty.Value{}
	var stack []string
	var visit func(name string)
	visit = func(name string) {
		lv := h.localDecls[name]
		switch state[name] {
		case done:
			return
		case visiting:
			i := len(stack) - 1
			for stack[i] != name {
				i--
			}
			cycle := append(append([]string(nil), stack[i:]...), name)
			h.errorf(lv.decl, "Cycle in local values", "These locals refer to each other in a cycle: %s.", "local."+strings.Join(cycle, " → local."))
			for _, n := range stack[i:] {
				vals[n] = poisoned(cty.DynamicPseudoType)
				state[n] = done
			}
			return
		}
		state[name] = visiting
		stack = append(stack, name)
		for _, t := range lv.expr.Variables() {
			if t.RootName() != "local" || len(t) < 2 {
				continue
			}
			if a, ok := t[1].(hcl.TraverseAttr); ok && h.localDecls[a.Name] != nil {
				visit(a.Name)
			}
		}
		stack = stack[:len(stack)-1]
		if state[name] == done { // poisoned by a cycle through it
			return
		}
		ctx.Variables["local"] = cty.ObjectVal(vals)
		v, diags := lv.expr.Value(ctx)
		h.diags = append(h.diags, diags...)
		if diags.HasErrors() {
			v = poisoned(cty.DynamicPseudoType)
		} else if !isBareReference(lv.expr) && hasDataMark(v) {
			// A value computed from a data source is not the data
			// source's own value: source_ami cannot take it.
			v = v.Mark(derivedMark{})
		}
		vals[name] = v
		state[name] = done
	}
	for _, name := range sortedKeys(h.localDecls) {
		visit(name)
	}
	ctx.Variables["local"] = cty.ObjectVal(vals)
	for _, name := range sortedKeys(h.localDecls) {
		if h.localDecls[name].sensitive {
			h.sensitive = append(h.sensitive, secretStrings(vals[name])...)
		}
	}
}

// Marks on values.

// poisonMark marks the stand-in for a value that failed to evaluate; the
// failure is reported once, and values computed from it are not reported
// again.
type poisonMark struct{}

// dataMark marks the (unknown) value of a data source's attribute, so that
// what is computed from it can name it.
type dataMark struct{ ref dataRef }

// derivedMark marks a value computed from a data source's value, as
// opposed to the value itself.
type derivedMark struct{}

func poisoned(ty cty.Type) cty.Value { return cty.UnknownVal(ty).Mark(poisonMark{}) }

func isPoisoned(v cty.Value) bool {
	_, marks := v.UnmarkDeep()
	_, ok := marks[poisonMark{}]
	return ok
}

func hasDataMark(v cty.Value) bool {
	_, marks := v.UnmarkDeep()
	for m := range marks {
		if _, ok := m.(dataMark); ok {
			return true
		}
	}
	return false
}

// dataRefs lists the data sources among marks, sorted.
func dataRefs(marks cty.ValueMarks) []dataRef {
	var out []dataRef
	for m := range marks {
		if dm, ok := m.(dataMark); ok {
			out = append(out, dm.ref)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// isBareReference reports whether expr is just a reference (var.x,
// data.t.n.id, "${local.x}"), not a computation. JSON-syntax expressions,
// which hide their template, count when they refer to one thing.
func isBareReference(expr hcl.Expression) bool {
	if w, ok := expr.(*hclsyntax.TemplateWrapExpr); ok {
		expr = w.Wrapped
	}
	switch expr.(type) {
	case *hclsyntax.ScopeTraversalExpr:
		return true
	case hclsyntax.Expression:
		return false
	}
	return len(expr.Variables()) == 1
}

func sortedAttrs(attrs hcl.Attributes) []*hcl.Attribute {
	out := make([]*hcl.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Range, out[j].Range
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		return a.Start.Byte < b.Start.Byte
	})
	return out
}
