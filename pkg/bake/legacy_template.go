package bake

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// This file is the template engine of legacy JSON templates: the
// {{function `arg`}} expressions Packer evaluates inside every string of a
// JSON template (https://developer.hashicorp.com/packer/docs/templates/legacy_json_templates/engine).
//
// Packer hands these strings to text/template with a function map that can
// read the process environment, call Consul, Vault and Secrets Manager, and
// run anything a plugin registers. kiln evaluates recipes inside its own
// Lambdas, so it parses the same syntax itself and evaluates it with a fixed
// set of functions that cannot reach the process environment, the file
// system or the network. Actions that name run-time data ({{.Vars}},
// {{ .Path }}, {{build `ID`}}, {{if .X}}...) are left in place for the
// provisioner that fills them at run time, as Packer's first pass does.

// tmplEnv is what a legacy template string is evaluated with.
type tmplEnv struct {
	// section names where the string is, for messages ("variables",
	// "builders", ...).
	section string
	// user resolves {{user `name`}}.
	user func(name string) (string, error)
	// env is the environment {{env `X`}} reads (LoadOptions.Env, never
	// the process environment); envAllowed is true only in the variables
	// section, as in Packer.
	env        map[string]string
	envAllowed bool
	now        time.Time
	newUUID    func() string
	// buildName and buildType are the builder's name and type, empty in the
	// variables section.
	buildName, buildType string
	// templateDir is the template's folder relative to the recipe root
	// ("." for a template at the root): kiln never shows host paths.
	templateDir string
	// budget, if set, is how many more bytes the strings of this load may
	// render to in all; see maxRenderedTotal.
	budget *int
}

// Limits on what templates render to. Variables may refer to each other,
// so a few lines of "{{user `a`}}{{user `a`}}" double a value at each step;
// these limits stop such a template long before it exhausts a Lambda.
const (
	maxRenderedString = 1 << 20
	maxRenderedTotal  = 32 << 20
)

// errNotReady is returned by tmplEnv.user for a variable whose own value
// is still being evaluated (variables may refer to each other).
type errNotReady struct{ name string }

func (e errNotReady) Error() string { return fmt.Sprintf("variable %q is not evaluated yet", e.name) }

// tmplError is a problem in a template string, at byte offsets of the
// string's decoded value.
type tmplError struct {
	start, end int
	summary    string
	detail     string
	// notReady names a variable that was not evaluated yet; only the
	// variables section retries on it.
	notReady string
}

// tmplFuncNames lists, sorted, the functions kiln evaluates in legacy
// templates, for messages.
const tmplFuncNames = "build_name, build_type, clean_resource_name, env, isotime, lower, pwd, " +
	"replace, replace_all, split, strftime, template_dir, timestamp, upper, user, uuid"

// tmplRuntimeFuncs are Packer functions whose value exists only while the
// build runs; an action calling one is left for the provisioner.
var tmplRuntimeFuncs = map[string]bool{"build": true}

// tmplRefused are Packer functions kiln knows and refuses, with the reason.
var tmplRefused = map[string]string{
	"consul_key":             "it reads Consul over the network; kiln evaluates recipes without network access. Pass the value with -var or a var file instead.",
	"vault":                  "it reads Vault over the network; kiln evaluates recipes without network access. Pass the value with -var or a var file instead.",
	"aws_secretsmanager":     "it reads AWS Secrets Manager with kiln's own credentials; kiln evaluates recipes without network access. Pass the value with -var or a var file instead.",
	"aws_secretsmanager_raw": "it reads AWS Secrets Manager with kiln's own credentials; kiln evaluates recipes without network access. Pass the value with -var or a var file instead.",
	"sed":                    "Packer removed it; use replace or replace_all.",
	"packer_version":         "kiln is not Packer and has no Packer version to report.",
}

// tmplKeywords begin text/template control actions, which are always
// run-time constructs in Packer templates ({{if .Sudo}}...{{end}}).
var tmplKeywords = map[string]bool{
	"if": true, "else": true, "end": true, "range": true, "with": true, "define": true,
	"template": true, "block": true, "break": true, "continue": true,
}

// render evaluates every load-time action of s and returns the result.
// Errors carry their offsets in s; on error the result is meaningless.
func (e *tmplEnv) render(s string) (string, []tmplError) {
	if !strings.Contains(s, "{{") {
		return s, nil
	}
	var (
		out  strings.Builder
		errs []tmplError
	)
	i := 0
	trimNext := false
	for i < len(s) {
		j := strings.Index(s[i:], "{{")
		if j < 0 {
			text := s[i:]
			if trimNext {
				text = strings.TrimLeft(text, " \t\r\n")
			}
			out.WriteString(text)
			break
		}
		text := s[i : i+j]
		if trimNext {
			text = strings.TrimLeft(text, " \t\r\n")
		}
		start := i + j
		a, err := parseAction(s, start)
		if err != nil {
			errs = append(errs, *err)
			return "", errs
		}
		if a.trimLeft {
			text = strings.TrimRight(text, " \t\r\n")
		}
		out.WriteString(text)
		trimNext = a.trimRight
		i = a.end
		switch {
		case a.comment:
		case a.runtime:
			// Keep it exactly as written, trim markers included: the
			// provisioner applies them when it renders at run time.
			out.WriteString(s[start:a.end])
			trimNext = false
		default:
			v, err := e.evalPipe(a.pipe)
			if err != nil {
				te := tmplError{start: start, end: a.end, summary: "Invalid template expression", detail: err.Error()}
				var nr errNotReady
				if errors.As(err, &nr) {
					te.notReady = nr.name
				}
				var fe *tmplFuncError
				if errors.As(err, &fe) {
					te.summary = fe.summary
					te.detail = fe.detail
				}
				errs = append(errs, te)
				continue
			}
			out.WriteString(v)
			if out.Len() > maxRenderedString {
				errs = append(errs, tmplError{start: start, end: a.end, summary: "Value too long",
					detail: fmt.Sprintf("This string renders to more than %d bytes.", maxRenderedString)})
				return "", errs
			}
		}
	}
	if len(errs) > 0 {
		return "", errs
	}
	if e.budget != nil {
		*e.budget -= out.Len()
		if *e.budget < 0 {
			return "", []tmplError{{start: 0, end: len(s), summary: "Template too large",
				detail: fmt.Sprintf("The template's strings render to more than %d bytes in all.", maxRenderedTotal)}}
		}
	}
	return out.String(), nil
}

// tmplFuncError is an error with its own diagnostic summary, for unknown
// and refused functions.
type tmplFuncError struct{ summary, detail string }

func (e *tmplFuncError) Error() string { return e.detail }

// tmplAction is one parsed {{...}}.
type tmplAction struct {
	end                 int // offset just after "}}"
	trimLeft, trimRight bool
	comment             bool
	runtime             bool
	pipe                *tmplPipe
}

type tmplPipe struct{ cmds []tmplCmd }

type tmplCmd struct{ args []tmplArg }

type argKind int

const (
	argIdent argKind = iota
	argString
	argInt
	argFloat
	argBool
	argPipe
)

type tmplArg struct {
	kind argKind
	s    string
	i    int64
	f    float64
	b    bool
	pipe *tmplPipe
}

// parseAction parses the action that starts with "{{" at s[start:].
func parseAction(s string, start int) (*tmplAction, *tmplError) {
	a := &tmplAction{}
	p := start + 2
	fail := func(end int, format string, args ...any) *tmplError {
		return &tmplError{start: start, end: end, summary: "Invalid template expression", detail: fmt.Sprintf(format, args...)}
	}
	if strings.HasPrefix(s[p:], "- ") || strings.HasPrefix(s[p:], "-\t") || strings.HasPrefix(s[p:], "-\n") || strings.HasPrefix(s[p:], "-\r") {
		a.trimLeft = true
		p += 2
	}
	// closeAt reports whether s[q:] closes the action, and where it ends.
	closeAt := func(q int) (int, bool) {
		if strings.HasPrefix(s[q:], "}}") {
			return q + 2, true
		}
		if q < len(s) && isTmplSpace(s[q]) {
			r := q
			for r < len(s) && isTmplSpace(s[r]) {
				r++
			}
			if strings.HasPrefix(s[r:], "-}}") {
				a.trimRight = true
				return r + 3, true
			}
		}
		return 0, false
	}
	if rest := strings.TrimLeft(s[p:], " \t\r\n"); strings.HasPrefix(rest, "/*") {
		q := p + (len(s[p:]) - len(rest))
		c := strings.Index(s[q+2:], "*/")
		if c < 0 {
			return nil, fail(len(s), "unclosed comment")
		}
		q += 2 + c + 2
		end, ok := closeAt(q)
		if !ok {
			return nil, fail(len(s), "comment ends before the closing }}")
		}
		a.end = end
		a.comment = true
		return a, nil
	}
	lx := &tmplLexer{s: s, p: p, closeAt: closeAt}
	toks, err := lx.all()
	if err != nil {
		return nil, fail(lx.errEnd(), "%s", err.Error())
	}
	a.end = lx.end
	for _, t := range toks {
		switch t.kind {
		case tokField, tokVar, tokAssign:
			a.runtime = true
		}
	}
	if len(toks) > 0 && toks[0].kind == tokIdent && tmplKeywords[toks[0].s] {
		a.runtime = true
	}
	for i, t := range toks {
		if t.kind == tokIdent && tmplRuntimeFuncs[t.s] && (i == 0 || toks[i-1].kind == tokPipe || toks[i-1].kind == tokLParen) {
			a.runtime = true
		}
	}
	if a.runtime {
		return a, nil
	}
	if len(toks) == 0 {
		return nil, fail(a.end, "missing value for command")
	}
	ps := &tmplParser{toks: toks}
	pipe, perr := ps.pipeline()
	if perr == nil && ps.i < len(toks) {
		perr = fmt.Errorf("unexpected %s", toks[ps.i].describe())
	}
	if perr != nil {
		return nil, fail(a.end, "%s", perr.Error())
	}
	a.pipe = pipe
	return a, nil
}

func isTmplSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }

type tokKind int

const (
	tokIdent tokKind = iota
	tokString
	tokNumber
	tokChar
	tokField
	tokVar
	tokLParen
	tokRParen
	tokPipe
	tokAssign
	tokComma
)

type tmplTok struct {
	kind tokKind
	s    string // identifier, decoded string, number text
}

func (t tmplTok) describe() string {
	switch t.kind {
	case tokIdent:
		return fmt.Sprintf("%q", t.s)
	case tokString:
		return "string " + strconv.Quote(t.s)
	case tokNumber, tokChar:
		return "number " + t.s
	case tokLParen:
		return `"("`
	case tokRParen:
		return `")"`
	case tokPipe:
		return `"|"`
	case tokComma:
		return `","`
	}
	return "token"
}

// tmplLexer splits an action into tokens up to its closing "}}".
type tmplLexer struct {
	s       string
	p       int
	end     int
	closeAt func(int) (int, bool)
}

func (lx *tmplLexer) errEnd() int {
	if lx.end > 0 {
		return lx.end
	}
	// Point at the rest of the action, up to the next "}}" if any.
	if c := strings.Index(lx.s[lx.p:], "}}"); c >= 0 {
		return lx.p + c + 2
	}
	return len(lx.s)
}

func (lx *tmplLexer) all() ([]tmplTok, error) {
	var toks []tmplTok
	s := lx.s
	for {
		if end, ok := lx.closeAt(lx.p); ok {
			lx.end = end
			return toks, nil
		}
		if lx.p >= len(s) {
			return nil, errors.New("unclosed action: missing }}")
		}
		c := s[lx.p]
		switch {
		case isTmplSpace(c):
			lx.p++
		case c == '(':
			toks = append(toks, tmplTok{kind: tokLParen})
			lx.p++
		case c == ')':
			toks = append(toks, tmplTok{kind: tokRParen})
			lx.p++
		case c == '|':
			toks = append(toks, tmplTok{kind: tokPipe})
			lx.p++
		case c == ',':
			toks = append(toks, tmplTok{kind: tokComma})
			lx.p++
		case c == '=':
			toks = append(toks, tmplTok{kind: tokAssign})
			lx.p++
		case c == ':' && strings.HasPrefix(s[lx.p:], ":="):
			toks = append(toks, tmplTok{kind: tokAssign})
			lx.p += 2
		case c == '`':
			q := strings.IndexByte(s[lx.p+1:], '`')
			if q < 0 {
				return nil, errors.New("unterminated raw string")
			}
			toks = append(toks, tmplTok{kind: tokString, s: s[lx.p+1 : lx.p+1+q]})
			lx.p += q + 2
		case c == '"':
			q := lx.p + 1
			for q < len(s) && s[q] != '"' {
				if s[q] == '\\' {
					q++
				}
				if q < len(s) && s[q] == '\n' {
					return nil, errors.New("unterminated quoted string")
				}
				q++
			}
			if q >= len(s) {
				return nil, errors.New("unterminated quoted string")
			}
			v, err := strconv.Unquote(s[lx.p : q+1])
			if err != nil {
				return nil, fmt.Errorf("invalid quoted string %s", s[lx.p:q+1])
			}
			toks = append(toks, tmplTok{kind: tokString, s: v})
			lx.p = q + 1
		case c == '\'':
			q := lx.p + 1
			for q < len(s) && s[q] != '\'' {
				if s[q] == '\\' {
					q++
				}
				q++
			}
			if q >= len(s) {
				return nil, errors.New("unterminated character constant")
			}
			toks = append(toks, tmplTok{kind: tokChar, s: s[lx.p : q+1]})
			lx.p = q + 1
		case c == '.' || c == '$':
			kind := tokField
			if c == '$' {
				kind = tokVar
			}
			q := lx.p + 1
			for q < len(s) && (isIdentByte(s[q]) || s[q] == '.') {
				q++
			}
			toks = append(toks, tmplTok{kind: kind, s: s[lx.p:q]})
			lx.p = q
		case c == '-' || c == '+' || (c >= '0' && c <= '9'):
			q := lx.p + 1
			for q < len(s) && (isIdentByte(s[q]) || s[q] == '.' || ((s[q] == '-' || s[q] == '+') && (s[q-1] == 'e' || s[q-1] == 'E' || s[q-1] == 'p' || s[q-1] == 'P'))) {
				q++
			}
			toks = append(toks, tmplTok{kind: tokNumber, s: s[lx.p:q]})
			lx.p = q
		case isIdentByte(c) || c >= utf8.RuneSelf:
			q := lx.p
			for q < len(s) {
				r, size := utf8.DecodeRuneInString(s[q:])
				if r != '_' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
					break
				}
				q += size
			}
			if q == lx.p {
				r, _ := utf8.DecodeRuneInString(s[q:])
				return nil, fmt.Errorf("unexpected %q in action", r)
			}
			toks = append(toks, tmplTok{kind: tokIdent, s: s[lx.p:q]})
			lx.p = q
		default:
			return nil, fmt.Errorf("unexpected %q in action", c)
		}
	}
}

func isIdentByte(b byte) bool {
	return b == '_' || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9')
}

// tmplParser parses a token list into a pipeline.
type tmplParser struct {
	toks  []tmplTok
	i     int
	depth int
}

func (ps *tmplParser) pipeline() (*tmplPipe, error) {
	ps.depth++
	defer func() { ps.depth-- }()
	if ps.depth > 100 {
		return nil, errors.New("expression nested too deeply")
	}
	p := &tmplPipe{}
	for {
		var cmd tmplCmd
		for ps.i < len(ps.toks) {
			t := ps.toks[ps.i]
			if t.kind == tokPipe || t.kind == tokRParen {
				break
			}
			arg, err := ps.operand()
			if err != nil {
				return nil, err
			}
			cmd.args = append(cmd.args, arg)
		}
		if len(cmd.args) == 0 {
			return nil, errors.New("missing value for command")
		}
		p.cmds = append(p.cmds, cmd)
		if ps.i < len(ps.toks) && ps.toks[ps.i].kind == tokPipe {
			ps.i++
			continue
		}
		return p, nil
	}
}

func (ps *tmplParser) operand() (tmplArg, error) {
	t := ps.toks[ps.i]
	ps.i++
	switch t.kind {
	case tokIdent:
		switch t.s {
		case "true", "false":
			return tmplArg{kind: argBool, b: t.s == "true"}, nil
		case "nil":
			return tmplArg{}, errors.New("nil is not a command")
		}
		return tmplArg{kind: argIdent, s: t.s}, nil
	case tokString:
		return tmplArg{kind: argString, s: t.s}, nil
	case tokChar:
		r, _, tail, err := strconv.UnquoteChar(t.s[1:len(t.s)-1], '\'')
		if err != nil || tail != "" {
			return tmplArg{}, fmt.Errorf("malformed character constant %s", t.s)
		}
		return tmplArg{kind: argInt, i: int64(r)}, nil
	case tokNumber:
		if n, err := strconv.ParseInt(t.s, 0, 64); err == nil {
			return tmplArg{kind: argInt, i: n}, nil
		}
		if f, err := strconv.ParseFloat(t.s, 64); err == nil {
			return tmplArg{kind: argFloat, f: f}, nil
		}
		return tmplArg{}, fmt.Errorf("bad number syntax: %q", t.s)
	case tokLParen:
		p, err := ps.pipeline()
		if err != nil {
			return tmplArg{}, err
		}
		if ps.i >= len(ps.toks) || ps.toks[ps.i].kind != tokRParen {
			return tmplArg{}, errors.New(`unclosed "(" in expression`)
		}
		ps.i++
		return tmplArg{kind: argPipe, pipe: p}, nil
	}
	return tmplArg{}, fmt.Errorf("unexpected %s in expression", t.describe())
}

// evalPipe evaluates a pipeline and formats its value as text/template does.
func (e *tmplEnv) evalPipe(p *tmplPipe) (string, error) {
	v, err := e.pipeValue(p)
	if err != nil {
		return "", err
	}
	return fmt.Sprint(v), nil
}

func (e *tmplEnv) pipeValue(p *tmplPipe) (any, error) {
	var (
		prev    any
		hasPrev bool
	)
	for _, cmd := range p.cmds {
		v, err := e.cmdValue(cmd, prev, hasPrev)
		if err != nil {
			return nil, err
		}
		prev, hasPrev = v, true
	}
	return prev, nil
}

func (e *tmplEnv) cmdValue(cmd tmplCmd, prev any, hasPrev bool) (any, error) {
	first := cmd.args[0]
	if first.kind != argIdent {
		if len(cmd.args) > 1 || hasPrev {
			return nil, fmt.Errorf("can't give argument to non-function %s", describeArg(first))
		}
		return e.argValue(first)
	}
	args := make([]any, 0, len(cmd.args))
	for _, a := range cmd.args[1:] {
		v, err := e.argValue(a)
		if err != nil {
			return nil, err
		}
		args = append(args, v)
	}
	if hasPrev {
		args = append(args, prev)
	}
	return e.call(first.s, args)
}

func describeArg(a tmplArg) string {
	switch a.kind {
	case argString:
		return strconv.Quote(a.s)
	case argInt:
		return strconv.FormatInt(a.i, 10)
	case argFloat:
		return strconv.FormatFloat(a.f, 'g', -1, 64)
	case argBool:
		return strconv.FormatBool(a.b)
	}
	return "value"
}

func (e *tmplEnv) argValue(a tmplArg) (any, error) {
	switch a.kind {
	case argIdent:
		// A bare function name as an argument is a call without arguments,
		// as in text/template: {{lower timestamp}}.
		return e.call(a.s, nil)
	case argString:
		return a.s, nil
	case argInt:
		return a.i, nil
	case argFloat:
		return a.f, nil
	case argBool:
		return a.b, nil
	case argPipe:
		return e.pipeValue(a.pipe)
	}
	return nil, errors.New("invalid argument")
}

// call runs the template function name. Only these functions exist.
func (e *tmplEnv) call(name string, args []any) (any, error) {
	switch name {
	case "user":
		s, err := wantArgs(name, args, "string")
		if err != nil {
			return nil, err
		}
		return e.user(s[0].(string))
	case "env":
		s, err := wantArgs(name, args, "string")
		if err != nil {
			return nil, err
		}
		if !e.envAllowed {
			return nil, &tmplFuncError{
				summary: "env not allowed here",
				detail:  fmt.Sprintf("{{env}} may only be used in the variables section, as in Packer, not in %s. Give the variable a default of {{env `%s`}} and use {{user `...`}} here.", e.section, s[0]),
			}
		}
		// Only the environment given to the build: never os.Getenv, where
		// the Lambda's own credentials live.
		return e.env[s[0].(string)], nil
	case "timestamp":
		if _, err := wantArgs(name, args); err != nil {
			return nil, err
		}
		return strconv.FormatInt(e.now.Unix(), 10), nil
	case "isotime":
		switch len(args) {
		case 0:
			return e.now.Format(time.RFC3339), nil
		case 1:
			f, ok := args[0].(string)
			if !ok {
				return nil, argTypeError(name, 0, "string", args[0])
			}
			return e.now.Format(f), nil
		}
		return nil, fmt.Errorf("isotime: too many arguments: want at most 1 (a Go time layout), got %d", len(args))
	case "strftime":
		s, err := wantArgs(name, args, "string")
		if err != nil {
			return nil, err
		}
		return strftime(s[0].(string), e.now), nil
	case "uuid":
		if _, err := wantArgs(name, args); err != nil {
			return nil, err
		}
		return e.newUUID(), nil
	case "clean_resource_name":
		s, err := wantArgs(name, args, "string")
		if err != nil {
			return nil, err
		}
		return cleanResourceName(s[0].(string)), nil
	case "lower":
		s, err := wantArgs(name, args, "string")
		if err != nil {
			return nil, err
		}
		return strings.ToLower(s[0].(string)), nil
	case "upper":
		s, err := wantArgs(name, args, "string")
		if err != nil {
			return nil, err
		}
		return strings.ToUpper(s[0].(string)), nil
	case "split":
		s, err := wantArgs(name, args, "string", "string", "int")
		if err != nil {
			return nil, err
		}
		parts := strings.Split(s[0].(string), s[1].(string))
		i := s[2].(int64)
		if i < 0 || i >= int64(len(parts)) {
			return nil, fmt.Errorf("split: part %d does not exist: splitting %q on %q gives %d parts", i, s[0], s[1], len(parts))
		}
		return parts[i], nil
	case "replace":
		s, err := wantArgs(name, args, "string", "string", "int", "string")
		if err != nil {
			return nil, err
		}
		return strings.Replace(s[3].(string), s[0].(string), s[1].(string), int(s[2].(int64))), nil
	case "replace_all":
		s, err := wantArgs(name, args, "string", "string", "string")
		if err != nil {
			return nil, err
		}
		return strings.ReplaceAll(s[2].(string), s[0].(string), s[1].(string)), nil
	case "build_name", "build_type":
		if _, err := wantArgs(name, args); err != nil {
			return nil, err
		}
		if e.buildName == "" {
			return nil, fmt.Errorf("%s is not available in %s: it names the builder, so it works in builders, provisioners and post-processors.", name, e.section)
		}
		if name == "build_name" {
			return e.buildName, nil
		}
		return e.buildType, nil
	case "template_dir":
		if _, err := wantArgs(name, args); err != nil {
			return nil, err
		}
		return e.templateDir, nil
	case "pwd":
		// Packer gives its working directory; kiln resolves every path
		// from the recipe's root and never shows a host path.
		if _, err := wantArgs(name, args); err != nil {
			return nil, err
		}
		return ".", nil
	}
	if why, ok := tmplRefused[name]; ok {
		return nil, &tmplFuncError{
			summary: "Unsupported template function",
			detail:  fmt.Sprintf("The template function %q is not supported: %s", name, why),
		}
	}
	return nil, &tmplFuncError{
		summary: "Unknown template function",
		detail:  fmt.Sprintf("There is no template function named %q. kiln's legacy templates support %s.", name, tmplFuncNames),
	}
}

// wantArgs checks the arguments of a call against kinds ("string", "int").
func wantArgs(name string, args []any, kinds ...string) ([]any, error) {
	if len(args) != len(kinds) {
		return nil, fmt.Errorf("%s: wrong number of arguments: want %d, got %d", name, len(kinds), len(args))
	}
	for i, k := range kinds {
		switch k {
		case "string":
			if _, ok := args[i].(string); !ok {
				return nil, argTypeError(name, i, k, args[i])
			}
		case "int":
			if _, ok := args[i].(int64); !ok {
				return nil, argTypeError(name, i, k, args[i])
			}
		}
	}
	return args, nil
}

func argTypeError(name string, i int, want string, got any) error {
	g := "string"
	switch got.(type) {
	case int64:
		g = "int"
	case float64:
		g = "float"
	case bool:
		g = "bool"
	}
	return fmt.Errorf("%s: argument %d must be a %s, got a %s (%v)", name, i+1, want, g, got)
}

// cleanResourceName is the amazon plugin's clean_resource_name: it keeps the
// characters CreateImage allows in an AMI name (letters, digits and
// "()[] ./-'@_") and replaces every other byte with "-". Unlike the Google
// and Azure versions it keeps case.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html
func cleanResourceName(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("()[] ./-'@_", c) >= 0:
		default:
			b[i] = '-'
		}
	}
	return string(b)
}

// strftime formats t with C strftime directives, as Packer's strftime
// function does. Unknown directives are kept as written.
func strftime(f string, t time.Time) string {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 == len(f) {
			b.WriteByte(f[i])
			continue
		}
		i++
		switch f[i] {
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'b', 'h':
			b.WriteString(t.Format("Jan"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'c':
			b.WriteString(t.Format("Mon Jan  2 15:04:05 2006"))
		case 'C':
			fmt.Fprintf(&b, "%02d", t.Year()/100)
		case 'd':
			b.WriteString(t.Format("02"))
		case 'D':
			b.WriteString(t.Format("01/02/06"))
		case 'e':
			b.WriteString(t.Format("_2"))
		case 'F':
			b.WriteString(t.Format("2006-01-02"))
		case 'H':
			b.WriteString(t.Format("15"))
		case 'I':
			b.WriteString(t.Format("03"))
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case 'L':
			b.WriteString(t.Format(".000")[1:])
		case 'm':
			b.WriteString(t.Format("01"))
		case 'M':
			b.WriteString(t.Format("04"))
		case 'n':
			b.WriteByte('\n')
		case 'p':
			b.WriteString(t.Format("PM"))
		case 'R':
			b.WriteString(t.Format("15:04"))
		case 's':
			b.WriteString(strconv.FormatInt(t.Unix(), 10))
		case 'S':
			b.WriteString(t.Format("05"))
		case 't':
			b.WriteByte('\t')
		case 'T':
			b.WriteString(t.Format("15:04:05"))
		case 'u':
			wd := int(t.Weekday())
			if wd == 0 {
				wd = 7
			}
			b.WriteString(strconv.Itoa(wd))
		case 'w':
			b.WriteString(strconv.Itoa(int(t.Weekday())))
		case 'y':
			b.WriteString(t.Format("06"))
		case 'Y':
			b.WriteString(t.Format("2006"))
		case 'z':
			b.WriteString(t.Format("-0700"))
		case 'Z':
			b.WriteString(t.Format("MST"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(f[i])
		}
	}
	return b.String()
}
