package awsfront

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"slices"
	"strings"
)

// element is one element of an XML response with the byte offsets that
// let the front change one value, or drop the element, and leave every
// other byte as moto sent it. (Decoding into structs and encoding again
// would reorder, re-indent and re-namespace the document.)
type element struct {
	name  string // as written, with any prefix
	start int    // offset of the '<' of the start tag
	inner int    // offset just past the start tag; == end for <a/>
	close int    // offset of the '<' of the end tag; == end for <a/>
	end   int    // offset just past the element
	text  string // the character data directly inside
	kids  []*element
}

// parseSpans parses b into a tree of elements under a synthetic document
// node.
func parseSpans(b []byte) (*element, error) {
	d := xml.NewDecoder(bytes.NewReader(b))
	doc := &element{end: len(b)}
	stack := []*element{doc}
	for {
		off := int(d.InputOffset())
		tok, err := d.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			name := t.Name.Local
			if t.Name.Space != "" {
				name = t.Name.Space + ":" + name
			}
			e := &element{name: name, start: off, inner: int(d.InputOffset())}
			top.kids = append(top.kids, e)
			stack = append(stack, e)
		case xml.EndElement:
			if len(stack) == 1 {
				return nil, errors.New("unbalanced end tag")
			}
			// For <a/> RawToken reports the end without reading input, so
			// close == end == inner.
			top.close, top.end = off, int(d.InputOffset())
			stack = stack[:len(stack)-1]
		case xml.CharData:
			top.text += string(t)
		}
	}
	if len(stack) != 1 {
		return nil, errors.New("unclosed element")
	}
	return doc, nil
}

// local is the element's name without a namespace prefix.
func (e *element) local() string {
	_, l, ok := strings.Cut(e.name, ":")
	if !ok {
		return e.name
	}
	return l
}

// find returns the descendants at a slash-separated path of local names
// below e, in document order.
func (e *element) find(path string) []*element {
	cur := []*element{e}
	for name := range strings.SplitSeq(path, "/") {
		var next []*element
		for _, c := range cur {
			for _, k := range c.kids {
				if k.local() == name {
					next = append(next, k)
				}
			}
		}
		cur = next
	}
	return cur
}

// first returns the first descendant at path, or nil.
func (e *element) first(path string) *element {
	if f := e.find(path); len(f) > 0 {
		return f[0]
	}
	return nil
}

// textAt is the trimmed text of the first descendant at path, "" if none.
func (e *element) textAt(path string) string {
	if f := e.first(path); f != nil {
		return strings.TrimSpace(f.text)
	}
	return ""
}

// edit replaces b[start:end] with repl.
type edit struct {
	start, end int
	repl       string
}

// setText is the edit that makes e's text s.
func setText(e *element, s string) edit {
	var esc strings.Builder
	_ = xml.EscapeText(&esc, []byte(s))
	if e.inner == e.end { // <a/>
		return edit{e.start, e.end, "<" + e.name + ">" + esc.String() + "</" + e.name + ">"}
	}
	return edit{e.inner, e.close, esc.String()}
}

// drop is the edit that removes e.
func drop(e *element) edit { return edit{e.start, e.end, ""} }

// applyEdits returns b with the edits made; they must not overlap.
func applyEdits(b []byte, edits []edit) []byte {
	if len(edits) == 0 {
		return b
	}
	slices.SortFunc(edits, func(x, y edit) int { return x.start - y.start })
	var out bytes.Buffer
	out.Grow(len(b))
	pos := 0
	for _, e := range edits {
		out.Write(b[pos:e.start])
		out.WriteString(e.repl)
		pos = e.end
	}
	out.Write(b[pos:])
	return out.Bytes()
}
