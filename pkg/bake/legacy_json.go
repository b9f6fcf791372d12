package bake

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	hcljson "github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
)

// This file holds the JSON plumbing of the legacy loader: a position-aware
// tree of the template, and the rendering of its strings into a copy of
// the source that hcl/v2/json parses with positions that map back, exactly,
// onto the file the user wrote.

type jsonKind int

const (
	jsonNull jsonKind = iota
	jsonBool
	jsonNumber
	jsonString
	jsonArray
	jsonObject
)

func (k jsonKind) String() string {
	return [...]string{"null", "a boolean", "a number", "a string", "an array", "an object"}[k]
}

// jsonNode is one value of a JSON document with its source range.
type jsonNode struct {
	kind jsonKind
	// str is the decoded value of a string.
	str     string
	rng     hcl.Range
	members []jsonMember // jsonObject, in source order
	elems   []*jsonNode  // jsonArray
}

type jsonMember struct {
	key    string
	keyRng hcl.Range
	val    *jsonNode
}

// member returns the value of key k, or nil.
func (n *jsonNode) member(k string) *jsonNode {
	for _, m := range n.members {
		if m.key == k {
			return m.val
		}
	}
	return nil
}

// jsonExpr is what hcl/v2/json expressions offer to walk a document.
type jsonExpr interface {
	hcl.Expression
	ExprMap() []hcl.KeyValuePair
	ExprList() []hcl.Expression
}

// parseJSONTree parses src (already known to be valid JSON) into a tree.
func parseJSONTree(src []byte, filename string) (*jsonNode, hcl.Diagnostics) {
	expr, diags := hcljson.ParseExpression(src, filename)
	if diags.HasErrors() {
		return nil, diags
	}
	return jsonTree(expr), nil
}

func jsonTree(expr hcl.Expression) *jsonNode {
	n := &jsonNode{rng: expr.Range()}
	je, ok := expr.(jsonExpr)
	if !ok {
		return n
	}
	if kvs := je.ExprMap(); kvs != nil {
		n.kind = jsonObject
		for _, kv := range kvs {
			k, _ := kv.Key.Value(nil)
			key := ""
			if k.Type() == cty.String && k.IsKnown() && !k.IsNull() {
				key = k.AsString()
			}
			n.members = append(n.members, jsonMember{key: key, keyRng: kv.Key.Range(), val: jsonTree(kv.Value)})
		}
		return n
	}
	if list := je.ExprList(); list != nil {
		n.kind = jsonArray
		for _, e := range list {
			n.elems = append(n.elems, jsonTree(e))
		}
		return n
	}
	v, _ := expr.Value(nil)
	switch {
	case v.IsNull() || !v.IsKnown():
		n.kind = jsonNull
	case v.Type() == cty.String:
		n.kind = jsonString
		n.str = v.AsString()
	case v.Type() == cty.Number:
		n.kind = jsonNumber
	case v.Type() == cty.Bool:
		n.kind = jsonBool
	}
	return n
}

// scalarText is the text of a string, number or boolean as a legacy
// variable holds it: numbers as written, booleans as "true"/"false".
func (n *jsonNode) scalarText(src []byte) (string, bool) {
	switch n.kind {
	case jsonString:
		return n.str, true
	case jsonNumber, jsonBool:
		if n.rng.CanSliceBytes(src) {
			return string(n.rng.SliceBytes(src)), true
		}
	}
	return "", false
}

// innerRange returns the source range of s[start:end] inside the string
// literal at rng whose decoded value is s. When the literal holds escapes
// or non-ASCII text the offsets cannot be mapped one to one, and the whole
// literal is returned.
func innerRange(src []byte, rng hcl.Range, s string, start, end int) hcl.Range {
	if !rng.CanSliceBytes(src) || string(rng.SliceBytes(src)) != `"`+s+`"` || start < 0 || end > len(s) || start > end {
		return rng
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf || s[i] < 0x20 {
			return rng
		}
	}
	r := rng
	r.Start.Byte += 1 + start
	r.Start.Column += 1 + start
	r.End = rng.Start
	r.End.Byte += 1 + end
	r.End.Column += 1 + end
	return r
}

// jsonLiteral encodes s as a JSON string literal of ASCII characters only,
// so that its width in columns is its length in bytes, and without raw
// newlines, so that it never moves the lines after it.
func jsonLiteral(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			writeU(&b, r)
		case r < utf8.RuneSelf:
			b.WriteRune(r)
		case r > 0xffff:
			r -= 0x10000
			writeU(&b, 0xd800+(r>>10))
			writeU(&b, 0xdc00+(r&0x3ff))
		default:
			// Includes utf8.RuneError for invalid bytes, written as U+FFFD.
			writeU(&b, r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func writeU(b *strings.Builder, r rune) {
	const hex = "0123456789abcdef"
	b.WriteString(`\u`)
	for shift := 12; shift >= 0; shift -= 4 {
		b.WriteByte(hex[(r>>uint(shift))&0xf])
	}
}

// splice replaces one string literal of the source with its rendering.
type splice struct {
	orig hcl.Range
	lit  string
}

// renderedDoc is the template source with some string literals replaced by
// their renderings. Rendered literals are single-line ASCII, so every line
// keeps its number; posMap translates columns and byte offsets.
type renderedDoc struct {
	file    string
	src     []byte // rendered
	splices []splice
}

// newRenderedDoc applies splices (non-overlapping) to src.
func newRenderedDoc(file string, src []byte, splices []splice) *renderedDoc {
	sort.Slice(splices, func(i, j int) bool { return splices[i].orig.Start.Byte < splices[j].orig.Start.Byte })
	var out []byte
	last := 0
	for _, s := range splices {
		out = append(out, src[last:s.orig.Start.Byte]...)
		out = append(out, s.lit...)
		last = s.orig.End.Byte
	}
	out = append(out, src[last:]...)
	return &renderedDoc{file: file, src: out, splices: splices}
}

// toRendered maps a position of the original source that is not inside a
// replaced literal to the rendered source.
func (d *renderedDoc) toRendered(p hcl.Pos) hcl.Pos {
	out := p
	for _, s := range d.splices {
		if s.orig.End.Byte > p.Byte {
			break
		}
		out.Byte += len(s.lit) - (s.orig.End.Byte - s.orig.Start.Byte)
		if s.orig.End.Line == p.Line {
			out.Column += len(s.lit) - (s.orig.End.Column - s.orig.Start.Column)
		}
	}
	return out
}

// toOrig maps a position of the rendered source back to the original. A
// position inside a replaced literal maps to the literal's start, or its
// end when end is set.
func (d *renderedDoc) toOrig(p hcl.Pos, end bool) hcl.Pos {
	byteDelta, colDelta := 0, 0
	for _, s := range d.splices {
		newStart := s.orig.Start.Byte + byteDelta
		newEnd := newStart + len(s.lit)
		if p.Byte <= newStart {
			break
		}
		if p.Byte < newEnd {
			if end {
				return s.orig.End
			}
			return s.orig.Start
		}
		byteDelta += len(s.lit) - (s.orig.End.Byte - s.orig.Start.Byte)
		if s.orig.End.Line == p.Line {
			colDelta += len(s.lit) - (s.orig.End.Column - s.orig.Start.Column)
		}
	}
	p.Byte -= byteDelta
	p.Column -= colDelta
	return p
}

// origRange maps a range of the rendered source back to the original.
func (d *renderedDoc) origRange(r hcl.Range) hcl.Range {
	if r.Filename != d.file {
		return r
	}
	r.Start = d.toOrig(r.Start, false)
	r.End = d.toOrig(r.End, true)
	return r
}

// renderedRange maps a range of the original source (outside replaced
// literals) to the rendered source.
func (d *renderedDoc) renderedRange(r hcl.Range) hcl.Range {
	r.Start = d.toRendered(r.Start)
	r.End = d.toRendered(r.End)
	return r
}

// body parses the object n of the original source, as rendered, into an
// hcl.Body whose ranges are in rendered coordinates (see origDiags).
func (d *renderedDoc) body(n *jsonNode) (hcl.Body, hcl.Diagnostics) {
	start := d.toRendered(n.rng.Start)
	end := d.toRendered(n.rng.End)
	if start.Byte < 0 || end.Byte > len(d.src) || start.Byte > end.Byte {
		return hcl.EmptyBody(), nil
	}
	f, diags := hcljson.ParseWithStartPos(d.src[start.Byte:end.Byte], d.file, start)
	if f == nil || f.Body == nil {
		return hcl.EmptyBody(), diags
	}
	return f.Body, diags
}

// origDiags maps the ranges of diagnostics about the rendered source back
// onto the original, so that they point at what the user wrote.
func (d *renderedDoc) origDiags(diags hcl.Diagnostics) hcl.Diagnostics {
	for _, diag := range diags {
		if diag.Subject != nil {
			r := d.origRange(*diag.Subject)
			diag.Subject = &r
		}
		if diag.Context != nil {
			r := d.origRange(*diag.Context)
			diag.Context = &r
		}
	}
	return diags
}

// numberText formats a cty number as a legacy variable holds it.
func numberText(v cty.Value) string {
	bf := v.AsBigFloat()
	if bf.IsInt() {
		i, _ := bf.Int(nil)
		return i.String()
	}
	f, _ := bf.Float64()
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// jsonSyntaxError reports where src stops being JSON, or nil.
func jsonSyntaxError(src []byte, filename string) *hcl.Diagnostic {
	var raw json.RawMessage
	err := json.Unmarshal(src, &raw)
	var se *json.SyntaxError
	if err == nil || !errors.As(err, &se) {
		return nil
	}
	// Offset counts the bytes read, the offending one included.
	at := int(se.Offset) - 1
	if strings.HasPrefix(se.Error(), "unexpected end") || at > len(src) {
		at = len(src)
	}
	if at < 0 {
		at = 0
	}
	start := posAt(src, at)
	end := start
	if at < len(src) {
		_, size := utf8.DecodeRune(src[at:])
		end.Byte += size
		end.Column++
	}
	hint := ""
	switch msg := se.Error(); {
	case strings.Contains(msg, "after object key:value pair"), strings.Contains(msg, "after array element"):
		hint = " Is a comma missing before it?"
	case strings.Contains(msg, "looking for beginning of object key string"):
		hint = " Object keys are quoted strings, and JSON allows no comma after the last member."
	case strings.Contains(msg, "looking for beginning of value"):
		hint = " JSON allows no comment and no comma after the last element."
	case strings.HasPrefix(msg, "unexpected end"):
		hint = " Is a closing brace or bracket missing?"
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Invalid JSON",
		Detail:   fmt.Sprintf("The template is not valid JSON at line %d, column %d: %s.%s", start.Line, start.Column, se.Error(), hint),
		Subject:  &hcl.Range{Filename: filename, Start: start, End: end},
	}
}

// posAt is the line and column (in characters) of byte offset at of src.
func posAt(src []byte, at int) hcl.Pos {
	p := hcl.Pos{Line: 1, Column: 1, Byte: at}
	lineStart := 0
	for i := 0; i < at && i < len(src); i++ {
		if src[i] == '\n' {
			p.Line++
			lineStart = i + 1
		}
	}
	p.Column += utf8.RuneCount(src[lineStart:min(at, len(src))])
	return p
}
