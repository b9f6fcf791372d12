package bake

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// This file loads HCL2 recipes: one *.pkr.hcl or *.pkr.json file, or a
// folder of them loaded together with its *.auto.pkrvars.hcl files, as
// Packer loads them (https://developer.hashicorp.com/packer/docs/templates/hcl_templates).
// The top level is read against an explicit schema; what Packer has and kiln
// does not (another builder, hcp_packer_registry, shell-local, ...) is an
// error that names it at its file:line:column. Every problem found is
// reported at once.
//
// Evaluation order: variables (defaults, then PKR_VAR_, auto var files,
// -var-file, -var), locals (data sources stand for unknown values, looked
// up at launch), data sources' own settings, then each build block once per
// source, with build.name, source.name and source.type known.

// hcl2Schema is the top level of an HCL2 template: what kiln reads, plus
// Packer's other top-level blocks, so that they are reported by name.
var hcl2Schema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "packer"},
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "variables"},
		{Type: "locals"},
		{Type: "local", LabelNames: []string{"name"}},
		{Type: "source", LabelNames: []string{"type", "name"}},
		{Type: "data", LabelNames: []string{"type", "name"}},
		{Type: "build"},
		{Type: "hcp_packer_registry"},
		{Type: "communicator", LabelNames: []string{"type", "name"}},
	},
}

var packerBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "required_version"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "required_plugins"}},
}

var buildBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "name"}, {Name: "description"}, {Name: "sources"}},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "source", LabelNames: []string{"reference"}},
		{Type: "provisioner", LabelNames: []string{"type"}},
		{Type: "error-cleanup-provisioner", LabelNames: []string{"type"}},
		{Type: "post-processor", LabelNames: []string{"type"}},
		{Type: "post-processors"},
		{Type: "hcp_packer_registry"},
		{Type: "from", LabelNames: []string{"type"}},
	},
}

var postProcessorsSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{{Type: "post-processor", LabelNames: []string{"type"}}},
}

// hcl2Load is the state of one HCL2 load.
type hcl2Load struct {
	l     *loader
	funcs *funcEnv
	diags hcl.Diagnostics

	vars       map[string]*inputVariable
	localDecls map[string]*localValue
	// sensitive collects the values of sensitive variables and locals.
	sensitive []string

	packer    []*hcl.Block
	sources   map[string]*hcl.Block // by "amazon-ebs.NAME"
	data      map[string]*hcl.Block // by "TYPE.NAME"
	dataOrder []string
	builds    []*hcl.Block
}

func (h *hcl2Load) errorf(rng hcl.Range, summary, format string, args ...any) {
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...)}
	if rng.Filename != "" {
		d.Subject = rng.Ptr()
	}
	h.diags = append(h.diags, d)
}

// hasSensitive reports whether the recipe declares a sensitive variable or
// local.
func (h *hcl2Load) hasSensitive() bool {
	for _, v := range h.vars {
		if v.sensitive {
			return true
		}
	}
	for _, lv := range h.localDecls {
		if lv.sensitive {
			return true
		}
	}
	return false
}

// isAutoVarFile reports whether name is a *.auto.pkrvars.hcl (or .json) file.
func isAutoVarFile(name string) bool {
	return strings.HasSuffix(name, ".auto.pkrvars.hcl") || strings.HasSuffix(name, ".auto.pkrvars.json")
}

// loadHCL loads the HCL2 template files (and auto var files) of a recipe.
// varFiles are the -var-file contents, keyed by the names in
// l.opts.VarFiles.
func (l *loader) loadHCL(files []string, varFiles map[string][]byte) (*Plan, hcl.Diagnostics) {
	h := &hcl2Load{
		l:          l,
		funcs:      &funcEnv{fsys: l.fsys, read: l.read, env: l.opts.Env, now: l.opts.now(), newUUID: l.opts.newUUID},
		vars:       map[string]*inputVariable{},
		localDecls: map[string]*localValue{},
		sources:    map[string]*hcl.Block{},
		data:       map[string]*hcl.Block{},
	}
	plan := h.load(files, varFiles)
	diags := sortDiags(dedupe(h.diags))
	if h.hasSensitive() {
		// A diagnostic that carries its expression and context is rendered
		// with the values it involves ("var.x is ..."): not when one of them
		// may be a secret.
		for _, d := range diags {
			d.Expression, d.EvalContext = nil, nil
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return plan, diags
}

func (h *hcl2Load) load(files []string, varFiles map[string][]byte) *Plan {
	templates, autoVars := h.parseFiles(files)
	var given []*hcl.File
	for _, name := range h.l.opts.VarFiles {
		if f := h.parse(name, varFiles[name]); f != nil {
			given = append(given, f)
		}
	}
	if h.diags.HasErrors() {
		return nil // syntax errors: what follows would only add noise
	}
	if len(templates) == 0 {
		h.errorf(hcl.Range{}, "No templates", "The recipe has var files but no *.pkr.hcl or *.pkr.json template.")
		return nil
	}
	for _, f := range templates {
		h.collect(f)
	}

	// Variables, then the context every other expression is evaluated in.
	defCtx := &hcl.EvalContext{Functions: h.funcs.functions(true)}
	for _, f := range templates {
		content, _, _ := f.Body.PartialContent(hcl2Schema)
		for _, b := range content.Blocks {
			switch b.Type {
			case "variable":
				h.declareVariable(b, defCtx)
			case "variables":
				h.declareVariables(b, defCtx)
			}
		}
	}
	h.setValues(autoVars, given)
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":  h.varObject(),
			"data": h.dataObject(),
			"path": cty.ObjectVal(map[string]cty.Value{"root": cty.StringVal("."), "cwd": cty.StringVal(".")}),
		},
		Functions: h.funcs.functions(false),
	}
	h.checkValues(ctx)
	h.evalLocals(ctx)

	plan := &Plan{Name: h.l.name, Format: "hcl2", Builds: []Build{}}
	plan.RequiredPlugins = h.requiredPlugins(ctx)
	plan.Data = h.decodeData(ctx)
	plan.Builds = h.decodeBuilds(ctx)
	var sensitive []string
	plan.Variables, sensitive = h.planVariables()
	plan.Sensitive = sortedUnique(append(sensitive, h.sensitive...))
	if h.diags.HasErrors() {
		return nil
	}
	for f := range h.l.read {
		plan.Files = append(plan.Files, f)
	}
	sort.Strings(plan.Files)
	hash, err := h.hash(plan.Files, varFiles)
	if err != nil {
		h.errorf(hcl.Range{}, "Cannot hash recipe", "%v.", err)
		return nil
	}
	plan.Hash = hash
	return plan
}

// parseFiles reads and parses the recipe's files, sorting them into
// templates and auto var files.
func (h *hcl2Load) parseFiles(files []string) (templates, autoVars []*hcl.File) {
	for _, name := range files {
		src, err := fs.ReadFile(h.l.fsys, name)
		if err != nil {
			h.errorf(hcl.Range{}, "Cannot read template", "Reading %s: %v.", name, unwrapPathError(err))
			continue
		}
		h.l.read[name] = true
		f := h.parse(name, src)
		if f == nil {
			continue
		}
		if isAutoVarFile(name) {
			autoVars = append(autoVars, f)
		} else {
			templates = append(templates, f)
		}
	}
	return templates, autoVars
}

// parse parses one file in HCL's native or JSON syntax, by its name.
func (h *hcl2Load) parse(name string, src []byte) *hcl.File {
	var (
		f     *hcl.File
		diags hcl.Diagnostics
	)
	if strings.HasSuffix(name, ".json") {
		f, diags = h.l.parser.ParseJSON(src, name)
	} else {
		f, diags = h.l.parser.ParseHCL(src, name)
	}
	h.diags = append(h.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	return f
}

// collect sorts a template's top-level blocks; those kiln does not support
// are reported here.
func (h *hcl2Load) collect(f *hcl.File) {
	content, diags := f.Body.Content(hcl2Schema)
	h.diags = append(h.diags, diags...)
	for _, b := range content.Blocks {
		switch b.Type {
		case "packer":
			h.packer = append(h.packer, b)
		case "locals":
			h.declareLocals(b)
		case "local":
			h.declareLocal(b)
		case "source":
			h.collectSource(b)
		case "data":
			h.collectData(b)
		case "build":
			h.builds = append(h.builds, b)
		case "hcp_packer_registry":
			h.errorf(b.DefRange, `kiln does not support "hcp_packer_registry"`,
				"kiln records each build's AMIs in its own outputs (an SSM parameter per Region and an EventBridge event), not in HCP Packer.")
		case "communicator":
			h.errorf(b.DefRange, `kiln does not support "communicator" blocks`,
				"Set communicator, ssh_username and ssh_interface in the amazon-ebs source itself.")
		}
	}
}

func (h *hcl2Load) collectSource(b *hcl.Block) {
	typ, name := b.Labels[0], b.Labels[1]
	if typ != "amazon-ebs" {
		h.errorf(b.LabelRanges[0], fmt.Sprintf("kiln does not support the %q builder", typ), "%s", unsupportedBuilderDetail(typ))
		return
	}
	key := typ + "." + name
	if prev := h.sources[key]; prev != nil {
		h.errorf(b.DefRange, "Duplicate source", "source %q %q is already defined at %s.", typ, name, prev.DefRange)
		return
	}
	h.sources[key] = b
}

func unsupportedBuilderDetail(typ string) string {
	detail := `kiln bakes AMIs with Packer's "amazon-ebs" builder: the build instance's EBS volume becomes the image.`
	switch typ {
	case "amazon-chroot", "amazon-ebssurrogate", "amazon-ebsvolume", "amazon-instance":
		detail += " Most " + typ + " templates can be rewritten as amazon-ebs sources."
	}
	return detail
}

func (h *hcl2Load) collectData(b *hcl.Block) {
	typ, name := b.Labels[0], b.Labels[1]
	if _, ok := dataOutput[typ]; !ok {
		detail := `kiln supports the "amazon-ami" and "amazon-parameterstore" data sources.`
		if typ == "amazon-secretsmanager" {
			detail += " Read secrets on the build instance at build time instead (for example with the AWS CLI, through iam_instance_profile), so that they never pass through kiln."
		}
		h.errorf(b.LabelRanges[0], fmt.Sprintf("kiln does not support the %q data source", typ), "%s", detail)
		return
	}
	key := typ + "." + name
	if prev := h.data[key]; prev != nil {
		h.errorf(b.DefRange, "Duplicate data source", "data %q %q is already defined at %s.", typ, name, prev.DefRange)
		return
	}
	h.data[key] = b
	h.dataOrder = append(h.dataOrder, key)
}

// dataObject is the value of data in expressions: each data source's
// attributes are unknown (looked up at launch) and marked with where they
// come from.
func (h *hcl2Load) dataObject() cty.Value {
	byType := map[string]map[string]cty.Value{}
	for _, key := range h.dataOrder {
		b := h.data[key]
		typ, name := b.Labels[0], b.Labels[1]
		attrs := map[string]cty.Type{}
		switch typ {
		case "amazon-ami":
			attrs = map[string]cty.Type{"id": cty.String, "name": cty.String, "creation_date": cty.String,
				"owner": cty.String, "owner_name": cty.String, "tags": cty.Map(cty.String)}
		case "amazon-parameterstore":
			attrs = map[string]cty.Type{"value": cty.String, "version": cty.String, "arn": cty.String}
		}
		vals := map[string]cty.Value{}
		for a, ty := range attrs {
			vals[a] = cty.UnknownVal(ty).Mark(dataMark{ref: dataRef{typ: typ, name: name, attr: a}})
		}
		if byType[typ] == nil {
			byType[typ] = map[string]cty.Value{}
		}
		byType[typ][name] = cty.ObjectVal(vals)
	}
	out := map[string]cty.Value{}
	for typ, m := range byType {
		out[typ] = cty.ObjectVal(m)
	}
	return cty.ObjectVal(out)
}

// Data sources.

// dataAMI is data "amazon-ami": an image lookup done at launch.
type dataAMI struct {
	Filters           *hcl.Attribute `hcl:"filters,optional"`
	Owners            *hcl.Attribute `hcl:"owners,optional"`
	MostRecent        *hcl.Attribute `hcl:"most_recent,optional"`
	IncludeDeprecated *hcl.Attribute `hcl:"include_deprecated,optional"`
	// region to look in; the build's Region when unset.
	Region *hcl.Attribute `hcl:"region,optional"`
	Rest   hcl.Body       `hcl:",remain"`
}

// dataParameter is data "amazon-parameterstore": an SSM parameter read at
// launch.
type dataParameter struct {
	Name           *hcl.Attribute `hcl:"name,optional"`
	WithDecryption *hcl.Attribute `hcl:"with_decryption,optional"`
	Region         *hcl.Attribute `hcl:"region,optional"`
	Rest           hcl.Body       `hcl:",remain"`
}

// dataExtras are the data sources' options beside their own (Packer's AWS
// access options).
var dataExtras = append(append([]extraOption(nil), credentialOptions...), []extraOption{
	{name: "aws_polling", block: true, kind: extraIgnored, why: "kiln's AWS clients retry and wait themselves."},
	{name: "max_retries", kind: extraIgnored, why: "kiln's AWS clients retry throttled calls themselves."},
	{name: "decode_authorization_messages", kind: extraIgnored, why: "kiln reports AWS errors as AWS returns them."},
	{name: "custom_endpoint_ec2", kind: extraUnsupported, why: "kiln uses the Region's endpoints."},
	{name: "insecure_skip_tls_verify", kind: extraUnsupported},
}...)

func (h *hcl2Load) decodeData(ctx *hcl.EvalContext) map[string]DataSource {
	if len(h.dataOrder) == 0 {
		return nil
	}
	out := map[string]DataSource{}
	for _, key := range h.dataOrder {
		b := h.data[key]
		what := "data " + b.Labels[0]
		ds := DataSource{Type: b.Labels[0]}
		switch ds.Type {
		case "amazon-ami":
			var cfg dataAMI
			_, diags := decodeStrict(b.Body, ctx, what, dataExtras, &cfg)
			d := &valueDecoder{ctx: ctx, diags: diags}
			ds.Filter = d.amiFilter(&amiFilterBlock{Filters: cfg.Filters, Owners: cfg.Owners, MostRecent: cfg.MostRecent,
				IncludeDeprecated: cfg.IncludeDeprecated, DefRange: b.DefRange})
			ds.Region = d.str(cfg.Region)
			h.diags = append(h.diags, d.diags...)
		case "amazon-parameterstore":
			var cfg dataParameter
			_, diags := decodeStrict(b.Body, ctx, what, dataExtras, &cfg)
			d := &valueDecoder{ctx: ctx, diags: diags}
			ds.Parameter = d.str(cfg.Name)
			ds.WithDecryption = d.boolean(cfg.WithDecryption)
			ds.Region = d.str(cfg.Region)
			if cfg.Name == nil {
				d.errorf(b.DefRange, "Missing required argument", `data "amazon-parameterstore" needs "name", the parameter's name.`)
			}
			h.diags = append(h.diags, d.diags...)
		}
		out[key] = ds
	}
	return out
}

// requiredPlugins reads packer { required_plugins { ... } }; the
// required_version constraint is Packer's own and not checked.
func (h *hcl2Load) requiredPlugins(ctx *hcl.EvalContext) []RequiredPlugin {
	var out []RequiredPlugin
	for _, b := range h.packer {
		content, diags := b.Body.Content(packerBlockSchema)
		h.diags = append(h.diags, diags...)
		d := &valueDecoder{ctx: ctx}
		_ = d.str(content.Attributes["required_version"])
		for _, rp := range content.Blocks {
			attrs, diags := rp.Body.JustAttributes()
			h.diags = append(h.diags, diags...)
			for _, a := range sortedAttrs(attrs) {
				var p struct {
					Source  *string `cty:"source"`
					Version *string `cty:"version"`
				}
				if d.decode(a, &p) {
					out = append(out, RequiredPlugin{Name: a.Name, Source: deref(p.Source), Version: deref(p.Version)})
				}
			}
		}
		h.diags = append(h.diags, d.diags...)
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Builds.

// sourceUse is one source a build block uses, with its overrides.
type sourceUse struct {
	ref   string // "amazon-ebs.NAME"
	block *hcl.Block
	// name is the build's name for the source: the nested block's name
	// attribute, or the source's own name.
	name     string
	override hcl.Body
	rng      hcl.Range
}

func (u sourceUse) fullName() string { return "amazon-ebs." + u.name }

func (h *hcl2Load) decodeBuilds(ctx *hcl.EvalContext) []Build {
	builds := []Build{}
	used := map[string]bool{}
	seen := map[string]hcl.Range{}
	for _, b := range h.builds {
		for _, build := range h.decodeBuild(b, ctx, used) {
			key := build.BuildName + "\x00" + build.Name
			if prev, dup := seen[key]; dup {
				h.errorf(b.DefRange, "Duplicate build", "Build %q of source %q is already defined at %s; give one of them another name.", build.BuildName, build.Name, prev)
				continue
			}
			seen[key] = b.DefRange
			builds = append(builds, build)
		}
	}
	if len(h.builds) == 0 {
		h.errorf(hcl.Range{}, "No build block", "A recipe needs a build block naming the sources to bake, for example:\n\nbuild {\n  sources = [\"source.amazon-ebs.NAME\"]\n}")
	}
	// Sources no build uses are still checked.
	for _, key := range sortedKeys(h.sources) {
		if !used[key] {
			b := h.sources[key]
			_, diags := decodeSource([]hcl.Body{b.Body}, h.sourceCtx(ctx, "", b.Labels[1]), h.l.fsys, h.l.read)
			h.diags = append(h.diags, diags...)
		}
	}
	return builds
}

// sourceCtx is ctx with build.name, source.name and source.type.
func (h *hcl2Load) sourceCtx(ctx *hcl.EvalContext, buildName, sourceName string) *hcl.EvalContext {
	c := ctx.NewChild()
	c.Variables = map[string]cty.Value{
		"build":  cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(buildName)}),
		"source": cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(sourceName), "type": cty.StringVal("amazon-ebs")}),
	}
	return c
}

func (h *hcl2Load) decodeBuild(b *hcl.Block, ctx *hcl.EvalContext, used map[string]bool) []Build {
	content, diags := b.Body.Content(buildBlockSchema)
	h.diags = append(h.diags, diags...)
	d := &valueDecoder{ctx: ctx}
	buildName := d.str(content.Attributes["name"])
	_ = d.str(content.Attributes["description"])
	h.diags = append(h.diags, d.diags...)

	uses := h.buildSources(b, content, ctx)
	for _, u := range uses {
		used[u.ref] = true
	}
	var (
		provs    []*hcl.Block
		cleanup  *hcl.Block
		ppBlocks []*hcl.Block
	)
	for _, blk := range content.Blocks {
		switch blk.Type {
		case "provisioner":
			provs = append(provs, blk)
		case "error-cleanup-provisioner":
			if cleanup != nil {
				h.errorf(blk.DefRange, "Duplicate error-cleanup-provisioner", "A build has at most one error-cleanup-provisioner; the first is at %s.", cleanup.DefRange)
				continue
			}
			cleanup = blk
		case "post-processor":
			ppBlocks = append(ppBlocks, blk)
		case "post-processors":
			chain, diags := blk.Body.Content(postProcessorsSchema)
			h.diags = append(h.diags, diags...)
			ppBlocks = append(ppBlocks, chain.Blocks...)
		case "hcp_packer_registry":
			h.errorf(blk.DefRange, `kiln does not support "hcp_packer_registry"`,
				"kiln records each build's AMIs in its own outputs (an SSM parameter per Region and an EventBridge event), not in HCP Packer.")
		case "from":
			h.errorf(blk.DefRange, `kiln does not support "from" blocks`, `Use sources = ["source.amazon-ebs.NAME"] or a nested source "source.amazon-ebs.NAME" { } block.`)
		}
	}
	if len(uses) == 0 {
		if content.Attributes["sources"] == nil && len(content.Blocks.OfType("source")) == 0 {
			h.errorf(b.DefRange, "Build without sources", `A build block needs sources = ["source.amazon-ebs.NAME"] or a nested source block.`)
		}
		// Still check the provisioners and post-processors.
		uses = []sourceUse{{name: ""}}
	}

	var builds []Build
	for _, u := range uses {
		sctx := h.sourceCtx(ctx, buildName, u.name)
		build := Build{Name: u.name, BuildName: buildName, Type: "amazon-ebs"}
		names := []string{u.name, u.fullName()}
		if buildName != "" {
			names = append(names, buildName+"."+u.fullName())
		}
		for _, p := range provs {
			if prov, ok := h.provisioner(p, sctx, uses, names); ok {
				build.Provisioners = append(build.Provisioners, prov)
			}
		}
		if cleanup != nil {
			if prov, ok := h.provisioner(cleanup, sctx, uses, names); ok {
				build.ErrorCleanup = &prov
			}
		}
		for _, pp := range ppBlocks {
			if out, ok := h.postProcessor(pp, sctx, uses, names); ok {
				build.PostProcessors = append(build.PostProcessors, out)
			}
		}
		if u.block == nil {
			continue
		}
		bodies := []hcl.Body{u.block.Body}
		if u.override != nil {
			bodies = append(bodies, u.override)
		}
		src, diags := decodeSource(bodies, sctx, h.l.fsys, h.l.read)
		h.diags = append(h.diags, diags...)
		build.Source = h.renderAMIName(src, bodies)
		if build.Source.Communicator == "none" && len(build.Provisioners) > 0 {
			h.errorf(provs[0].DefRange, "Provisioners need a communicator",
				`Source %q sets communicator = "none", so kiln cannot reach the instance to run provisioners.`, u.ref)
		}
		builds = append(builds, build)
	}
	return builds
}

// buildSources resolves a build's sources: the sources list first, then
// nested source blocks, as in Packer.
func (h *hcl2Load) buildSources(b *hcl.Block, content *hcl.BodyContent, ctx *hcl.EvalContext) []sourceUse {
	var uses []sourceUse
	seen := map[string]hcl.Range{}
	add := func(u sourceUse) {
		if prev, dup := seen[u.name]; dup {
			h.errorf(u.rng, "Duplicate source in build", "This build already uses a source named %q at %s; set name = \"...\" in a nested source block to tell them apart.", u.name, prev)
			return
		}
		seen[u.name] = u.rng
		uses = append(uses, u)
	}
	if a := content.Attributes["sources"]; a != nil {
		exprs, diags := hcl.ExprList(a.Expr)
		if diags.HasErrors() {
			// Not a literal list: evaluate it as a whole.
			d := &valueDecoder{ctx: ctx}
			for _, s := range d.strs(a) {
				if u, ok := h.sourceRef(s, a.Expr.Range()); ok {
					add(u)
				}
			}
			h.diags = append(h.diags, d.diags...)
		}
		for _, e := range exprs {
			d := &valueDecoder{ctx: ctx}
			s := d.str(&hcl.Attribute{Name: "sources", Expr: e, Range: e.Range(), NameRange: a.NameRange})
			h.diags = append(h.diags, d.diags...)
			if u, ok := h.sourceRef(s, e.Range()); ok {
				add(u)
			}
		}
	}
	for _, blk := range content.Blocks.OfType("source") {
		u, ok := h.sourceRef(blk.Labels[0], blk.LabelRanges[0])
		if !ok {
			continue
		}
		inner, rest, diags := blk.Body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "name"}}})
		h.diags = append(h.diags, diags...)
		if a := inner.Attributes["name"]; a != nil {
			d := &valueDecoder{ctx: ctx}
			if n := d.str(a); n != "" {
				u.name = n
			}
			h.diags = append(h.diags, d.diags...)
		}
		u.override, u.rng = rest, blk.DefRange
		add(u)
	}
	return uses
}

// sourceRef resolves "source.amazon-ebs.NAME" (or "amazon-ebs.NAME").
func (h *hcl2Load) sourceRef(s string, rng hcl.Range) (sourceUse, bool) {
	ref := strings.TrimPrefix(s, "source.")
	typ, name, ok := strings.Cut(ref, ".")
	if !ok || typ == "" || name == "" || strings.Contains(name, ".") {
		h.errorf(rng, "Invalid source reference", "%q is not a source reference; write \"source.amazon-ebs.NAME\".", s)
		return sourceUse{}, false
	}
	if typ != "amazon-ebs" {
		h.errorf(rng, fmt.Sprintf("kiln does not support the %q builder", typ), "%s", unsupportedBuilderDetail(typ))
		return sourceUse{}, false
	}
	b := h.sources[ref]
	if b == nil {
		var known []string
		for k := range h.sources {
			known = append(known, "source."+k)
		}
		sort.Strings(known)
		detail := "No source \"amazon-ebs\" \"" + name + "\" is defined."
		if len(known) > 0 {
			detail += " Defined sources: " + strings.Join(known, ", ") + "."
		}
		h.errorf(rng, "Unknown source", "%s", detail)
		return sourceUse{}, false
	}
	return sourceUse{ref: ref, block: b, name: name, rng: rng}, true
}

// provisioner decodes a provisioner block for one build; ok is false when
// only/except leave it out or it has errors.
func (h *hcl2Load) provisioner(b *hcl.Block, ctx *hcl.EvalContext, uses []sourceUse, names []string) (Provisioner, bool) {
	p, only, except, diags := decodeProvisioner(b.Labels[0], b.DefRange, b.Body, ctx, h.l.fsys, h.l.read)
	h.diags = append(h.diags, diags...)
	h.checkOnlyExcept(b.Body, uses, only, except)
	return p, !diags.HasErrors() && selected(names, only, except)
}

func (h *hcl2Load) postProcessor(b *hcl.Block, ctx *hcl.EvalContext, uses []sourceUse, names []string) (PostProcessor, bool) {
	only, except, rest, diags := decodeOnlyExcept(b.Body, ctx)
	h.diags = append(h.diags, diags...)
	h.checkOnlyExcept(b.Body, uses, only, except)
	pp, diags := decodePostProcessor(b.Labels[0], b.DefRange, rest, ctx)
	h.diags = append(h.diags, diags...)
	return pp, !diags.HasErrors() && selected(names, only, except)
}

// selected applies only and except to a build known by names.
func selected(names, only, except []string) bool {
	match := func(list []string) bool {
		for _, s := range list {
			for _, n := range names {
				if s == n {
					return true
				}
			}
		}
		return false
	}
	if len(only) > 0 && !match(only) {
		return false
	}
	return !match(except)
}

// checkOnlyExcept reports only/except entries that name no source of the
// build, as Packer does.
func (h *hcl2Load) checkOnlyExcept(body hcl.Body, uses []sourceUse, only, except []string) {
	if len(uses) == 0 || uses[0].block == nil {
		return
	}
	content, _, _ := body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "only"}, {Name: "except"}}})
	for attr, list := range map[string][]string{"only": only, "except": except} {
		for _, s := range list {
			found := false
			for _, u := range uses {
				found = found || selected([]string{u.name, u.fullName()}, []string{s}, nil) ||
					strings.HasSuffix(s, "."+u.fullName())
			}
			if !found {
				var names []string
				for _, u := range uses {
					names = append(names, fmt.Sprintf("%q", u.fullName()))
				}
				rng := content.Attributes[attr].Expr.Range()
				h.errorf(rng, "Unknown build in "+attr, "%q names no source of this build; it has %s.", s, strings.Join(names, ", "))
			}
		}
	}
}

// renderAMIName renders the {{timestamp}}-style placeholders Packer allows
// in ami_name, then checks the name.
func (h *hcl2Load) renderAMIName(src AmazonEBS, bodies []hcl.Body) AmazonEBS {
	if src.AMIName == "" {
		return src
	}
	rng := attrRange(bodies, "ami_name")
	if checkAMIName(src.AMIName, true) != "" {
		return src // decodeSource reported it
	}
	if strings.Contains(src.AMIName, "{{") {
		env := &tmplEnv{
			section: "builders",
			user: func(name string) (string, error) {
				return "", fmt.Errorf("{{user `%s`}} is for legacy JSON templates; in HCL2 write ${var.%s}", name, name)
			},
			now:         h.funcs.now,
			newUUID:     h.funcs.newUUID,
			buildType:   "amazon-ebs",
			templateDir: ".",
		}
		out, errs := env.render(src.AMIName)
		for _, e := range errs {
			h.errorf(rng, e.summary, "%s", e.detail)
		}
		if len(errs) > 0 {
			return src
		}
		src.AMIName = out
	}
	if msg := checkAMIName(src.AMIName, false); msg != "" {
		h.errorf(rng, "Invalid ami_name", "%s", msg)
	}
	return src
}

// attrRange finds where the last of bodies sets attribute name.
func attrRange(bodies []hcl.Body, name string) hcl.Range {
	var rng hcl.Range
	for _, b := range bodies {
		content, _, _ := b.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: name}}})
		if a := content.Attributes[name]; a != nil {
			rng = a.Expr.Range()
		}
	}
	return rng
}

// hash is the content hash of the recipe's files combined with the
// variable values given to the build (PKR_VAR_ variables it declares, var
// files and -var), so that the same recipe with other inputs differs.
func (h *hcl2Load) hash(files []string, varFiles map[string][]byte) (string, error) {
	content, err := ContentHash(h.l.fsys, files)
	if err != nil {
		return "", err
	}
	sum := sha256.New()
	put := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		sum.Write(n[:])
		io.WriteString(sum, s)
	}
	put("kiln hcl2 plan v1")
	put(content)
	for _, name := range sortedKeys(h.l.opts.Env) {
		if v, ok := strings.CutPrefix(name, "PKR_VAR_"); ok && h.vars[v] != nil {
			put("env")
			put(name)
			put(h.l.opts.Env[name])
		}
	}
	for _, vf := range h.l.opts.VarFiles {
		put("var-file")
		put(path.Base(vf))
		put(string(varFiles[vf]))
	}
	for _, name := range sortedKeys(h.l.opts.Vars) {
		put("var")
		put(name)
		put(h.l.opts.Vars[name])
	}
	return "sha256:" + hex.EncodeToString(sum.Sum(nil)), nil
}

// sortDiags orders diagnostics by file and position, keeping those without
// a position first.
func sortDiags(diags hcl.Diagnostics) hcl.Diagnostics {
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

func sortedUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	sort.Strings(s)
	out := s[:1]
	for _, v := range s[1:] {
		if v != out[len(out)-1] {
			out = append(out, v)
		}
	}
	return out
}
