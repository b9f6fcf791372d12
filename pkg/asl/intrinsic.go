package asl

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"maps"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Intrinsic functions, as documented at
// https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html.

type argKind int

const (
	argString argKind = iota
	argNumber
	argBool
	argNull
	argPath
	argCall
)

// intrinsicArg is one argument of an intrinsic call.
type intrinsicArg struct {
	kind argKind
	str  string // argString: the unescaped value
	raw  string // argString: as written between the quotes, escapes intact
	num  json.Number
	b    bool
	path *path
	call *intrinsicCall
}

type intrinsicCall struct {
	name string
	args []*intrinsicArg
}

type intrinsicSpec struct {
	minArgs, maxArgs int // maxArgs < 0: any number
	fn               func(env *evalEnv, c *intrinsicCall, args []any) (any, error)
}

var intrinsics map[string]intrinsicSpec

func init() {
	intrinsics = map[string]intrinsicSpec{
		"States.Format":         {1, -1, fnFormat},
		"States.StringToJson":   {1, 1, fnStringToJSON},
		"States.JsonToString":   {1, 1, fnJSONToString},
		"States.Array":          {0, -1, fnArray},
		"States.ArrayPartition": {2, 2, fnArrayPartition},
		"States.ArrayContains":  {2, 2, fnArrayContains},
		"States.ArrayRange":     {3, 3, fnArrayRange},
		"States.ArrayGetItem":   {2, 2, fnArrayGetItem},
		"States.ArrayLength":    {1, 1, fnArrayLength},
		"States.ArrayUnique":    {1, 1, fnArrayUnique},
		"States.Base64Encode":   {1, 1, fnBase64Encode},
		"States.Base64Decode":   {1, 1, fnBase64Decode},
		"States.Hash":           {2, 2, fnHash},
		"States.JsonMerge":      {3, 3, fnJSONMerge},
		"States.MathRandom":     {2, 3, fnMathRandom},
		"States.MathAdd":        {2, 2, fnMathAdd},
		"States.StringSplit":    {2, 2, fnStringSplit},
		"States.UUID":           {0, 0, fnUUID},
	}
}

// isIntrinsic reports whether a payload-template value is an intrinsic call.
func isIntrinsic(s string) bool { return strings.HasPrefix(s, "States.") }

// parseIntrinsic parses a whole intrinsic invocation such as
// "States.Format('{} items', States.ArrayLength($.items))".
func parseIntrinsic(s string) (*intrinsicCall, error) {
	p := &intrinsicParser{s: s}
	c, err := p.call(0)
	if err != nil {
		return nil, fmt.Errorf("intrinsic %q: %v", s, err)
	}
	p.space()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("intrinsic %q: unexpected %q after the call", s, p.s[p.i:])
	}
	return c, nil
}

type intrinsicParser struct {
	s string
	i int
}

// maxIntrinsicDepth is the nesting AWS allows within one field.
const maxIntrinsicDepth = 10

func (p *intrinsicParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *intrinsicParser) call(depth int) (*intrinsicCall, error) {
	if depth >= maxIntrinsicDepth {
		return nil, fmt.Errorf("more than %d nested intrinsic functions", maxIntrinsicDepth)
	}
	start := p.i
	for p.i < len(p.s) && (p.s[p.i] == '.' || isAlnum(p.s[p.i])) {
		p.i++
	}
	name := p.s[start:p.i]
	spec, ok := intrinsics[name]
	if !ok {
		return nil, fmt.Errorf("unknown function %q", name)
	}
	p.space()
	if p.i >= len(p.s) || p.s[p.i] != '(' {
		return nil, fmt.Errorf("expected '(' after %s", name)
	}
	p.i++
	c := &intrinsicCall{name: name}
	p.space()
	if p.i < len(p.s) && p.s[p.i] == ')' {
		p.i++
	} else {
		for {
			a, err := p.arg(depth)
			if err != nil {
				return nil, err
			}
			c.args = append(c.args, a)
			p.space()
			if p.i >= len(p.s) {
				return nil, fmt.Errorf("missing ')' in %s", name)
			}
			if p.s[p.i] == ')' {
				p.i++
				break
			}
			if p.s[p.i] != ',' {
				return nil, fmt.Errorf("expected ',' or ')' in %s, found %q", name, p.s[p.i])
			}
			p.i++
		}
	}
	if len(c.args) < spec.minArgs || (spec.maxArgs >= 0 && len(c.args) > spec.maxArgs) {
		return nil, fmt.Errorf("%s takes %s, got %d", name, arity(spec), len(c.args))
	}
	if name == "States.JsonToString" && c.args[0].kind != argPath {
		return nil, fmt.Errorf("the argument of States.JsonToString must be a path")
	}
	return c, nil
}

func arity(s intrinsicSpec) string {
	switch {
	case s.maxArgs < 0:
		return fmt.Sprintf("at least %d arguments", s.minArgs)
	case s.minArgs == s.maxArgs:
		return fmt.Sprintf("%d arguments", s.minArgs)
	}
	return fmt.Sprintf("%d to %d arguments", s.minArgs, s.maxArgs)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

func (p *intrinsicParser) arg(depth int) (*intrinsicArg, error) {
	p.space()
	if p.i >= len(p.s) {
		return nil, fmt.Errorf("missing argument")
	}
	rest := p.s[p.i:]
	switch {
	case rest[0] == '\'':
		return p.stringArg()
	case rest[0] == '$':
		return p.pathArg()
	case strings.HasPrefix(rest, "States."):
		c, err := p.call(depth + 1)
		if err != nil {
			return nil, err
		}
		return &intrinsicArg{kind: argCall, call: c}, nil
	}
	end := p.i
	for end < len(p.s) && p.s[end] != ',' && p.s[end] != ')' {
		end++
	}
	tok := strings.TrimSpace(p.s[p.i:end])
	p.i = end
	switch tok {
	case "true", "false":
		return &intrinsicArg{kind: argBool, b: tok == "true"}, nil
	case "null":
		return &intrinsicArg{kind: argNull}, nil
	}
	if !jsonNumberRE.MatchString(tok) {
		return nil, fmt.Errorf("bad argument %q", tok)
	}
	return &intrinsicArg{kind: argNumber, num: json.Number(tok)}, nil
}

// jsonNumberRE is JSON's number syntax, which intrinsic literals follow.
var jsonNumberRE = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// stringArg reads a single-quoted literal. The escapes \' \{ \} \\ are the
// only ones allowed; an open backslash is an error, as on AWS.
func (p *intrinsicParser) stringArg() (*intrinsicArg, error) {
	p.i++ // opening quote
	start := p.i
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch c {
		case '\\':
			if p.i+1 >= len(p.s) || !strings.ContainsRune(`'{}\`, rune(p.s[p.i+1])) {
				return nil, fmt.Errorf("open escape '\\' in string literal")
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case '\'':
			a := &intrinsicArg{kind: argString, str: b.String(), raw: p.s[start:p.i]}
			p.i++
			return a, nil
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return nil, fmt.Errorf("unterminated string literal")
}

func (p *intrinsicParser) pathArg() (*intrinsicArg, error) {
	start := p.i
	depth := 0
	var quote byte
	for ; p.i < len(p.s); p.i++ {
		c := p.s[p.i]
		if quote != 0 {
			if c == '\\' {
				p.i++
			} else if c == quote {
				quote = 0
			}
			continue
		}
		switch c {
		case '\'', '"':
			if depth > 0 {
				quote = c
			}
		case '[':
			depth++
		case ']':
			depth--
		case ',', ')':
			if depth == 0 {
				goto done
			}
		}
	}
done:
	raw := strings.TrimSpace(p.s[start:p.i])
	pth, err := parsePath(raw)
	if err != nil {
		return nil, err
	}
	return &intrinsicArg{kind: argPath, path: pth}, nil
}

func intrinsicErr(c *intrinsicCall, format string, args ...any) *failure {
	return &failure{name: StatesIntrinsicFailure, cause: c.name + ": " + fmt.Sprintf(format, args...)}
}

// eval runs the call against the environment.
func (c *intrinsicCall) eval(env *evalEnv) (any, error) {
	args := make([]any, len(c.args))
	for i, a := range c.args {
		v, err := a.eval(env)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	return intrinsics[c.name].fn(env, c, args)
}

func (a *intrinsicArg) eval(env *evalEnv) (any, error) {
	switch a.kind {
	case argString:
		return a.str, nil
	case argNumber:
		return a.num, nil
	case argBool:
		return a.b, nil
	case argNull:
		return nil, nil
	case argPath:
		return env.resolve(a.path)
	case argCall:
		return a.call.eval(env)
	}
	return nil, fmt.Errorf("bad intrinsic argument")
}

func fnFormat(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	tmpl, ok := args[0].(string)
	if !ok {
		return nil, intrinsicErr(c, "the template must be a string, got %s", kind(args[0]))
	}
	// A literal template keeps its escapes so that \{ and \} stay literal
	// braces rather than placeholders.
	escapes := c.args[0].kind == argString
	if escapes {
		tmpl = c.args[0].raw
	}
	var b strings.Builder
	used := 0
	for i := 0; i < len(tmpl); i++ {
		ch := tmpl[i]
		switch {
		case escapes && ch == '\\' && i+1 < len(tmpl):
			i++
			b.WriteByte(tmpl[i])
		case ch == '{' && i+1 < len(tmpl) && tmpl[i+1] == '}':
			i++
			used++
			if used < len(args) {
				b.WriteString(formatValue(args[used]))
			}
		default:
			b.WriteByte(ch)
		}
	}
	if used != len(args)-1 {
		return nil, intrinsicErr(c, "the template has %d placeholders but %d values were given", used, len(args)-1)
	}
	return b.String(), nil
}

// formatValue renders a States.Format argument: strings as they are, other
// scalars as JSON, and arrays and objects the way AWS's Java runtime prints
// them: [a, b] and {k=v, ...}.
func formatValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = formatValue(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(x)) {
			parts = append(parts, k+"="+formatValue(x[k]))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return mustJSON(v)
}

func fnStringToJSON(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	s, ok := args[0].(string)
	if !ok {
		return nil, intrinsicErr(c, "the argument must be a string, got %s", kind(args[0]))
	}
	v, err := decodeJSON([]byte(s))
	if err != nil {
		return nil, intrinsicErr(c, "%q is not JSON: %v", s, err)
	}
	return v, nil
}

func fnJSONToString(_ *evalEnv, _ *intrinsicCall, args []any) (any, error) {
	return mustJSON(args[0]), nil
}

func fnArray(_ *evalEnv, _ *intrinsicCall, args []any) (any, error) {
	return slices.Clone(args), nil
}

func arrayArg(c *intrinsicCall, v any) ([]any, error) {
	a, ok := v.([]any)
	if !ok {
		return nil, intrinsicErr(c, "expected an array, got %s", kind(v))
	}
	return a, nil
}

func intArg(c *intrinsicCall, v any, what string) (int64, error) {
	i, ok := toInt(v)
	if !ok {
		return 0, intrinsicErr(c, "%s must be an integer, got %s", what, mustJSON(v))
	}
	return i, nil
}

func fnArrayPartition(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	a, err := arrayArg(c, args[0])
	if err != nil {
		return nil, err
	}
	size, err := intArg(c, args[1], "the chunk size")
	if err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, intrinsicErr(c, "the chunk size must be positive, got %d", size)
	}
	out := []any{}
	for chunk := range slices.Chunk(a, int(size)) {
		out = append(out, slices.Clone(chunk))
	}
	return out, nil
}

func fnArrayContains(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	a, err := arrayArg(c, args[0])
	if err != nil {
		return nil, err
	}
	return slices.ContainsFunc(a, func(v any) bool { return jsonEqual(v, args[1]) }), nil
}

// maxArrayRange is the most elements States.ArrayRange may produce.
const maxArrayRange = 1000

func fnArrayRange(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	var n [3]int64
	for i, what := range []string{"the start", "the end", "the step"} {
		v, err := intArg(c, args[i], what)
		if err != nil {
			return nil, err
		}
		n[i] = v
	}
	start, end, stepBy := n[0], n[1], n[2]
	if stepBy == 0 {
		return nil, intrinsicErr(c, "the step must not be zero")
	}
	out := []any{}
	for v := start; (stepBy > 0 && v <= end) || (stepBy < 0 && v >= end); v += stepBy {
		if len(out) == maxArrayRange {
			return nil, intrinsicErr(c, "the range has more than %d elements", maxArrayRange)
		}
		out = append(out, intNumber(v))
	}
	return out, nil
}

func fnArrayGetItem(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	a, err := arrayArg(c, args[0])
	if err != nil {
		return nil, err
	}
	i, err := intArg(c, args[1], "the index")
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= int64(len(a)) {
		return nil, intrinsicErr(c, "index %d is out of range for an array of %d", i, len(a))
	}
	return a[i], nil
}

func fnArrayLength(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	a, err := arrayArg(c, args[0])
	if err != nil {
		return nil, err
	}
	return intNumber(int64(len(a))), nil
}

func fnArrayUnique(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	a, err := arrayArg(c, args[0])
	if err != nil {
		return nil, err
	}
	out := []any{}
	for _, v := range a {
		if !slices.ContainsFunc(out, func(o any) bool { return jsonEqual(o, v) }) {
			out = append(out, v)
		}
	}
	return out, nil
}

// maxIntrinsicString is the longest string Base64 and Hash accept.
const maxIntrinsicString = 10000

func stringArg(c *intrinsicCall, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", intrinsicErr(c, "expected a string, got %s", kind(v))
	}
	if utf8.RuneCountInString(s) > maxIntrinsicString {
		return "", intrinsicErr(c, "the string is longer than %d characters", maxIntrinsicString)
	}
	return s, nil
}

func fnBase64Encode(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	s, err := stringArg(c, args[0])
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.EncodeToString([]byte(s)), nil
}

func fnBase64Decode(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	s, err := stringArg(c, args[0])
	if err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(s); err != nil {
			return nil, intrinsicErr(c, "%q is not base64", s)
		}
	}
	return string(b), nil
}

func fnHash(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	s, err := stringArg(c, args[0])
	if err != nil {
		return nil, err
	}
	var h hash.Hash
	switch alg := args[1].(type) {
	case string:
		switch alg {
		case "MD5":
			h = md5.New()
		case "SHA-1":
			h = sha1.New()
		case "SHA-256":
			h = sha256.New()
		case "SHA-384":
			h = sha512.New384()
		case "SHA-512":
			h = sha512.New()
		}
	}
	if h == nil {
		return nil, intrinsicErr(c, "the algorithm must be one of MD5, SHA-1, SHA-256, SHA-384, SHA-512; got %s", mustJSON(args[1]))
	}
	h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fnJSONMerge(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	a, ok1 := args[0].(map[string]any)
	b, ok2 := args[1].(map[string]any)
	if !ok1 || !ok2 {
		return nil, intrinsicErr(c, "both values to merge must be objects, got %s and %s", kind(args[0]), kind(args[1]))
	}
	deep, ok := args[2].(bool)
	if !ok {
		return nil, intrinsicErr(c, "the third argument must be a boolean")
	}
	if deep {
		return nil, intrinsicErr(c, "only shallow merges (false) are supported")
	}
	out := maps.Clone(a)
	if out == nil {
		out = map[string]any{}
	}
	maps.Copy(out, b)
	return out, nil
}

func fnMathRandom(env *evalEnv, c *intrinsicCall, args []any) (any, error) {
	start, err := intArg(c, args[0], "the start")
	if err != nil {
		return nil, err
	}
	end, err := intArg(c, args[1], "the end")
	if err != nil {
		return nil, err
	}
	if end <= start {
		return nil, intrinsicErr(c, "the end (%d) must be greater than the start (%d)", end, start)
	}
	span := uint64(end - start)
	var r uint64
	if len(args) == 3 {
		seed, err := intArg(c, args[2], "the seed")
		if err != nil {
			return nil, err
		}
		r = rand.New(rand.NewPCG(uint64(seed), 0x6b696c6e)).Uint64N(span)
	} else {
		r = env.rand.uint64n(span)
	}
	return intNumber(start + int64(r)), nil
}

func fnMathAdd(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	var sum int64
	for i, v := range args {
		n, err := intArg(c, v, fmt.Sprintf("argument %d", i+1))
		if err != nil {
			return nil, err
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			return nil, intrinsicErr(c, "argument %d (%d) is outside the 32-bit integer range", i+1, n)
		}
		sum += n
	}
	return intNumber(sum), nil
}

func fnStringSplit(_ *evalEnv, c *intrinsicCall, args []any) (any, error) {
	s, ok1 := args[0].(string)
	seps, ok2 := args[1].(string)
	if !ok1 || !ok2 {
		return nil, intrinsicErr(c, "both arguments must be strings, got %s and %s", kind(args[0]), kind(args[1]))
	}
	// Each character of the second argument is a delimiter; empty pieces
	// are dropped.
	out := []any{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(seps, r) }) {
		out = append(out, f)
	}
	return out, nil
}

func fnUUID(env *evalEnv, _ *intrinsicCall, _ []any) (any, error) {
	return env.rand.uuid(), nil
}
