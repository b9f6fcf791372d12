package asl

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// path is a parsed JsonPath in the subset Step Functions definitions use:
// "$", "$.a.b", "$.a[0]", "$.a[-1]", "$['x']", "$.a.['x y']", "$.a[*].b",
// "$.*", and the same rooted at "$$" for the context object. Deep scans
// ("..") , filters ("[?()]"), slices and unions are not supported and are
// reported when the definition is loaded.
type path struct {
	raw     string
	context bool
	segs    []pathSeg
}

type segKind int

const (
	segField segKind = iota
	segIndex
	segWildcard
)

type pathSeg struct {
	kind  segKind
	name  string
	index int
}

func (p *path) String() string { return p.raw }

// definite reports whether the path names at most one value (no wildcard).
// Reference paths (ResultPath, ItemsPath, Variable, ...) must be definite.
func (p *path) definite() bool {
	for _, s := range p.segs {
		if s.kind == segWildcard {
			return false
		}
	}
	return true
}

func parsePath(s string) (*path, error) {
	p := &path{raw: s}
	var rest string
	switch {
	case strings.HasPrefix(s, "$$"):
		p.context = true
		rest = s[2:]
	case strings.HasPrefix(s, "$"):
		rest = s[1:]
	default:
		return nil, fmt.Errorf("path %q must start with '$'", s)
	}
	for len(rest) > 0 {
		switch rest[0] {
		case '.':
			rest = rest[1:]
			switch {
			case rest == "":
				return nil, fmt.Errorf("path %q ends with '.'", s)
			case rest[0] == '.':
				return nil, fmt.Errorf("path %q: deep scan '..' is not supported", s)
			case rest[0] == '[':
				// "$.a.['b']" is accepted by AWS; read it as "$.a['b']".
				continue
			case rest[0] == '*':
				p.segs = append(p.segs, pathSeg{kind: segWildcard})
				rest = rest[1:]
				continue
			}
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			name := rest[:end]
			if strings.ContainsAny(name, "]'\" ") {
				return nil, fmt.Errorf("path %q: field %q needs bracket notation", s, name)
			}
			p.segs = append(p.segs, pathSeg{kind: segField, name: name})
			rest = rest[end:]
		case '[':
			seg, n, err := parseBracket(rest)
			if err != nil {
				return nil, fmt.Errorf("path %q: %v", s, err)
			}
			p.segs = append(p.segs, seg)
			rest = rest[n:]
		default:
			return nil, fmt.Errorf("path %q: unexpected %q", s, rest[0])
		}
	}
	return p, nil
}

// parseBracket reads "[...]" at the start of s and returns the segment and
// the number of bytes it used.
func parseBracket(s string) (pathSeg, int, error) {
	if len(s) < 3 {
		return pathSeg{}, 0, fmt.Errorf("unterminated '['")
	}
	switch q := s[1]; q {
	case '\'', '"':
		var b strings.Builder
		for i := 2; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '\\' && i+1 < len(s):
				i++
				b.WriteByte(s[i])
			case c == q:
				if i+1 >= len(s) || s[i+1] != ']' {
					return pathSeg{}, 0, fmt.Errorf("expected ']' after quoted name")
				}
				return pathSeg{kind: segField, name: b.String()}, i + 2, nil
			default:
				b.WriteByte(c)
			}
		}
		return pathSeg{}, 0, fmt.Errorf("unterminated quoted name")
	case '*':
		if s[2] != ']' {
			return pathSeg{}, 0, fmt.Errorf("expected ']' after '*'")
		}
		return pathSeg{kind: segWildcard}, 3, nil
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return pathSeg{}, 0, fmt.Errorf("unterminated '['")
	}
	inner := strings.TrimSpace(s[1:end])
	if strings.ContainsAny(inner, "?:,()@") {
		return pathSeg{}, 0, fmt.Errorf("%q: filters, slices and unions are not supported", s[:end+1])
	}
	i, err := strconv.Atoi(inner)
	if err != nil {
		return pathSeg{}, 0, fmt.Errorf("bad index %q", inner)
	}
	return pathSeg{kind: segIndex, index: i}, end + 1, nil
}

// get evaluates the path against input (or the context object for "$$").
// A definite path that matches nothing reports false; a path with a
// wildcard always matches and returns the list of what it found.
func (p *path) get(input, ctxObj any) (any, bool) {
	root := input
	if p.context {
		root = ctxObj
	}
	if p.definite() {
		cur := root
		for _, s := range p.segs {
			next, ok := step(cur, s)
			if !ok {
				return nil, false
			}
			cur = next
		}
		return cur, true
	}
	cur := []any{root}
	for _, s := range p.segs {
		var out []any
		for _, v := range cur {
			if s.kind == segWildcard {
				switch x := v.(type) {
				case []any:
					out = append(out, x...)
				case map[string]any:
					for _, k := range slices.Sorted(maps.Keys(x)) {
						out = append(out, x[k])
					}
				}
				continue
			}
			if next, ok := step(v, s); ok {
				out = append(out, next)
			}
		}
		cur = out
	}
	if cur == nil {
		cur = []any{}
	}
	return cur, true
}

func step(v any, s pathSeg) (any, bool) {
	switch s.kind {
	case segField:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		x, ok := m[s.name]
		return x, ok
	case segIndex:
		a, ok := v.([]any)
		if !ok {
			return nil, false
		}
		i := s.index
		if i < 0 {
			i += len(a)
		}
		if i < 0 || i >= len(a) {
			return nil, false
		}
		return a[i], true
	}
	return nil, false
}

// set returns a copy of root with value placed at the (definite, "$"-rooted)
// path, creating objects for missing fields on the way, as ResultPath does.
// It copies only the containers on the path; root itself is not changed.
func (p *path) set(root, value any) (any, error) {
	return setIn(root, p.segs, value, p.raw)
}

func setIn(cur any, segs []pathSeg, value any, raw string) (any, error) {
	if len(segs) == 0 {
		return value, nil
	}
	s := segs[0]
	switch s.kind {
	case segField:
		var m map[string]any
		switch x := cur.(type) {
		case map[string]any:
			m = maps.Clone(x)
		case nil:
			m = map[string]any{}
		default:
			return nil, fmt.Errorf("cannot set field %q in a %s", s.name, kind(cur))
		}
		child, err := setIn(m[s.name], segs[1:], value, raw)
		if err != nil {
			return nil, err
		}
		m[s.name] = child
		return m, nil
	case segIndex:
		a, ok := cur.([]any)
		if !ok {
			return nil, fmt.Errorf("cannot index a %s", kind(cur))
		}
		i := s.index
		if i < 0 {
			i += len(a)
		}
		if i < 0 || i >= len(a) {
			return nil, fmt.Errorf("index %d is out of range for an array of %d", s.index, len(a))
		}
		a = slices.Clone(a)
		child, err := setIn(a[i], segs[1:], value, raw)
		if err != nil {
			return nil, err
		}
		a[i] = child
		return a, nil
	}
	return nil, fmt.Errorf("path %q is not a reference path", raw)
}

// jsonPathLabel renders a path the way AWS errors quote what had no match,
// for example $['a']['b'].
func (p *path) jsonPathLabel() string {
	var b strings.Builder
	b.WriteString("$")
	if p.context {
		b.WriteString("$")
	}
	for _, s := range p.segs {
		switch s.kind {
		case segField:
			fmt.Fprintf(&b, "['%s']", s.name)
		case segIndex:
			fmt.Fprintf(&b, "[%d]", s.index)
		case segWildcard:
			b.WriteString("[*]")
		}
	}
	return b.String()
}
