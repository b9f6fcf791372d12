package bake

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path"
	"slices"
	"strings"
)

// ErrUnsafePath is matched (with errors.Is) by every error that rejects a
// path because it could reach outside the recipe root: an absolute path, a
// ".." that climbs above the root, a NUL byte, a backslash, or a link that
// points outside.
var ErrUnsafePath = errors.New("unsafe path")

// UnsafePathError reports a path, given by a recipe or found in a bundle,
// that kiln refuses. Loaders can turn Path and Reason into a diagnostic.
type UnsafePathError struct {
	// Path is the path as it was given.
	Path string
	// Reason says why the path is refused, in words for the recipe's author.
	Reason string
}

// Error returns a message naming the path and the reason.
func (e *UnsafePathError) Error() string {
	return fmt.Sprintf("unsafe path %q: %s", e.Path, e.Reason)
}

// Is reports whether target is ErrUnsafePath.
func (e *UnsafePathError) Is(target error) bool { return target == ErrUnsafePath }

// maxRecipePathLen bounds a path or a link target, well above what a real
// recipe uses (Linux's PATH_MAX is 4096).
const maxRecipePathLen = 4096

// RecipeFS is a read-only view of one recipe's root folder, backed either by
// a directory on disk (through os.Root, so no path or symlink can leave it)
// or by a bundle held in memory. It implements fs.FS, fs.StatFS,
// fs.ReadFileFS, fs.ReadDirFS and fs.ReadLinkFS; like every fs.FS it takes
// clean slash-separated paths relative to the root, so pass a path a recipe
// gives through ResolvePath first. Symlinks inside the root are followed by
// Open, Stat and ReadFile; ReadDir and fs.WalkDir report them as links and
// do not descend into them, so a link cycle cannot make a walk endless.
//
// A RecipeFS is safe for concurrent use.
type RecipeFS struct {
	name string
	fsys fs.FS
	root *os.Root // nil unless backed by a directory on disk
}

// OpenRecipeDir opens the directory dir as a recipe root. The caller must
// Close it. Symlinks that point outside dir, directly or through other
// links, cannot be followed.
func OpenRecipeDir(dir string) (*RecipeFS, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open recipe dir %q: %w", dir, err)
	}
	return &RecipeFS{name: dir, fsys: root.FS(), root: root}, nil
}

// OpenRecipeBundle reads the bundle in r (see OpenBundle) into memory and
// returns its recipe root, named name in messages.
func OpenRecipeBundle(r io.ReaderAt, size int64, name string, limits BundleLimits) (*RecipeFS, error) {
	fsys, err := OpenBundle(r, size, name, limits)
	if err != nil {
		return nil, err
	}
	return &RecipeFS{name: name, fsys: fsys}, nil
}

// NewMemRecipeFS returns an in-memory recipe root holding files, keyed by
// slash-separated path relative to the root. It is meant for a recipe
// uploaded as a single file and for loaders' tests. Paths are checked the
// way bundle entries are; parent directories are created as needed.
func NewMemRecipeFS(name string, files map[string][]byte) (*RecipeFS, error) {
	b := newMemBuilder(math.MaxInt)
	for _, p := range slices.Sorted(maps.Keys(files)) {
		clean, err := cleanEntryName(p)
		if err != nil {
			return nil, fmt.Errorf("new recipe fs %q: %w", name, err)
		}
		if err := b.add(bundleEntry{name: clean, kind: bundleFile, perm: 0o644, data: files[p]}); err != nil {
			return nil, fmt.Errorf("new recipe fs %q: %w", name, err)
		}
	}
	fsys, err := b.finish()
	if err != nil {
		return nil, fmt.Errorf("new recipe fs %q: %w", name, err)
	}
	return &RecipeFS{name: name, fsys: fsys}, nil
}

// NewRecipeFS wraps fsys, for example an fstest.MapFS in a test, as a
// recipe root named name. fsys must itself be confined to the root.
func NewRecipeFS(name string, fsys fs.FS) *RecipeFS {
	return &RecipeFS{name: name, fsys: fsys}
}

// Name returns the root's display name for messages: the directory as given
// to OpenRecipeDir, or the bundle's name.
func (r *RecipeFS) Name() string { return r.name }

// Close releases the directory handle of a disk-backed root. It is a no-op
// for other roots.
func (r *RecipeFS) Close() error {
	if r.root == nil {
		return nil
	}
	return r.root.Close()
}

// Open opens the named file. On disk, it refuses anything but regular files
// and directories, so a FIFO or device in the recipe folder cannot block or
// flood a reader.
func (r *RecipeFS) Open(name string) (fs.File, error) {
	if err := r.checkRegular("open", name); err != nil {
		return nil, err
	}
	return r.fsys.Open(name)
}

// ReadFile reads the named file, following links inside the root.
func (r *RecipeFS) ReadFile(name string) ([]byte, error) {
	if err := r.checkRegular("readfile", name); err != nil {
		return nil, err
	}
	return fs.ReadFile(r.fsys, name)
}

// ReadDir reads the named directory, sorted by name. Symlinks are reported
// as links, not as what they point to.
func (r *RecipeFS) ReadDir(name string) ([]fs.DirEntry, error) { return fs.ReadDir(r.fsys, name) }

// Stat returns the FileInfo of the named file, following links.
func (r *RecipeFS) Stat(name string) (fs.FileInfo, error) { return fs.Stat(r.fsys, name) }

// Lstat returns the FileInfo of the named file without following a final link.
func (r *RecipeFS) Lstat(name string) (fs.FileInfo, error) { return fs.Lstat(r.fsys, name) }

// ReadLink returns the target of the named symlink.
func (r *RecipeFS) ReadLink(name string) (string, error) { return fs.ReadLink(r.fsys, name) }

// checkRegular refuses, on disk, to open anything but a regular file or a
// directory. Bundles never hold anything else.
func (r *RecipeFS) checkRegular(op, name string) error {
	if r.root == nil {
		return nil
	}
	info, err := fs.Stat(r.fsys, name)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() && !info.IsDir() {
		return &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("not a regular file (%v)", info.Mode().Type())}
	}
	return nil
}

// pathSyntaxProblem returns why p cannot name a place inside a root, looking
// only at its spelling, or "" if it can. It does not look at "..".
func pathSyntaxProblem(p string) string {
	switch {
	case p == "":
		return "empty path"
	case len(p) > maxRecipePathLen:
		return fmt.Sprintf("longer than %d bytes", maxRecipePathLen)
	case strings.IndexByte(p, 0) >= 0:
		return "contains a NUL byte"
	case strings.IndexByte(p, '\\') >= 0:
		return `contains a backslash; use "/" to separate folders`
	case p[0] == '/':
		return "absolute paths are not allowed; use a path relative to the recipe root"
	case len(p) >= 2 && p[1] == ':' && ('a' <= p[0]|0x20 && p[0]|0x20 <= 'z'):
		return "drive-letter paths are not allowed; use a path relative to the recipe root"
	}
	return ""
}

// escapesRoot reports whether the clean path p climbs above its root.
func escapesRoot(clean string) bool {
	return clean == ".." || strings.HasPrefix(clean, "../")
}

// ResolvePath turns a path a recipe gives, such as "scripts/setup.sh",
// "./files/app.conf" or "${path.root}/x" after path.root expanded to ".",
// into the clean relative path that RecipeFS methods take. It refuses, with
// an *UnsafePathError naming the path and why, an empty path, an absolute
// or drive-letter path (so "/proc/self/environ" can never be read), a NUL
// byte, a backslash, and any ".." that climbs above the root. A ".." that
// stays inside ("a/../b") is cleaned away lexically. The root itself
// resolves to ".". A trailing slash is dropped, so a caller that gives it a
// meaning (the file provisioner's "copy the contents") must look first.
func ResolvePath(p string) (string, error) {
	if why := pathSyntaxProblem(p); why != "" {
		return "", &UnsafePathError{Path: p, Reason: why}
	}
	clean := path.Clean(p)
	if escapesRoot(clean) {
		return "", &UnsafePathError{Path: p, Reason: `".." climbs above the recipe root`}
	}
	return clean, nil
}

// ListFiles returns every file under the directory dir (a recipe path,
// checked with ResolvePath), relative to dir, sorted: what the file
// provisioner uploads for a directory source. A symlink to a file is listed
// as a file; a symlink to a directory is not descended into. A dangling
// link or a special file is an error, since it could not be uploaded.
func ListFiles(fsys fs.FS, dir string) ([]string, error) {
	base, err := ResolvePath(dir)
	if err != nil {
		return nil, fmt.Errorf("list files in %q: %w", dir, err)
	}
	var files []string
	err = walkRecipeFiles(fsys, base, func(rel string, regular bool, err error) error {
		switch {
		case err != nil:
			return err
		case !regular:
			return fmt.Errorf("%q is not a regular file", path.Join(base, rel))
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list files in %q: %w", dir, err)
	}
	slices.Sort(files)
	return files, nil
}

// walkRecipeFiles calls fn for every non-directory under base, with its path
// relative to base, whether it is (or links to) a regular file, and the
// error from following a link. Directories reached through links are
// skipped, as fs.WalkDir does.
func walkRecipeFiles(fsys fs.FS, base string, fn func(rel string, regular bool, err error) error) error {
	return fs.WalkDir(fsys, base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel := p
		if base != "." {
			rel = strings.TrimPrefix(p, base+"/")
		}
		if p == base {
			// base is itself a file.
			return fmt.Errorf("%q is not a directory", base)
		}
		switch t := d.Type(); {
		case t.IsRegular():
			return fn(rel, true, nil)
		case t&fs.ModeSymlink != 0:
			info, err := fs.Stat(fsys, p)
			if err != nil {
				return fn(rel, false, fmt.Errorf("follow link %q: %w", p, err))
			}
			if info.IsDir() {
				return nil
			}
			return fn(rel, info.Mode().IsRegular(), nil)
		default:
			return fn(rel, false, nil)
		}
	})
}

// maxFilesetAlternatives bounds how many patterns one {a,b} pattern may expand
// into, since a recipe's pattern is untrusted.
const maxFilesetAlternatives = 1024

// Fileset implements Packer's and Terraform's fileset(path, pattern): the
// files under dir (a recipe path, checked with ResolvePath) whose path
// relative to dir matches pattern, relative to dir and sorted. In pattern,
// "*" matches any run of characters but "/", "**" as a whole path segment
// matches any number of folders (including none), "?" matches one
// character but "/", "[abc]", "[a-z]" and "[!abc]" match one character of
// a class, "{a,b}" matches either alternative, and "\" escapesRoot the next
// character. Hidden files are matched like any other. Only files are
// returned; symlinks to files count as files, and symlinked folders are not
// searched. A dir that does not exist gives no files, as in Terraform.
func Fileset(fsys fs.FS, dir, pattern string) ([]string, error) {
	base, err := ResolvePath(dir)
	if err != nil {
		return nil, fmt.Errorf("fileset %q %q: %w", dir, pattern, err)
	}
	m, err := compileFileset(pattern)
	if err != nil {
		return nil, fmt.Errorf("fileset %q %q: %w", dir, pattern, err)
	}
	info, err := fs.Stat(fsys, base)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !info.IsDir()) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fileset %q %q: %w", dir, pattern, err)
	}
	var files []string
	err = walkRecipeFiles(fsys, base, func(rel string, regular bool, err error) error {
		if !m.match(rel) {
			return nil
		}
		if err != nil {
			return err
		}
		if regular {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fileset %q %q: %w", dir, pattern, err)
	}
	slices.Sort(files)
	return files, nil
}

// filesetPattern is a compiled Fileset pattern: one or more brace-free
// alternatives, each split into path segments.
type filesetPattern struct {
	alts [][]string
}

// compileFileset expands braces, cleans each alternative as Terraform's
// filepath.Join would, and checks every segment's syntax.
func compileFileset(pattern string) (*filesetPattern, error) {
	if len(pattern) > maxRecipePathLen {
		return nil, fmt.Errorf("pattern longer than %d bytes", maxRecipePathLen)
	}
	if strings.IndexByte(pattern, 0) >= 0 {
		return nil, &UnsafePathError{Path: pattern, Reason: "contains a NUL byte"}
	}
	alts, err := expandBraces(pattern)
	if err != nil {
		return nil, err
	}
	g := &filesetPattern{}
	for _, alt := range alts {
		if escapesRoot(path.Clean(alt)) {
			return nil, &UnsafePathError{Path: pattern, Reason: `".." climbs above the fileset's folder`}
		}
		// A leading "/" is relative to dir, as filepath.Join(dir, pattern) makes it.
		clean := strings.TrimPrefix(path.Clean("/"+alt), "/")
		if clean == "" {
			continue // matches only the folder itself, never a file
		}
		segs := strings.Split(clean, "/")
		for i, s := range segs {
			s = bangToCaret(s)
			if _, err := path.Match(s, ""); err != nil {
				return nil, fmt.Errorf("pattern segment %q: %w", s, err)
			}
			segs[i] = s
		}
		g.alts = append(g.alts, segs)
	}
	return g, nil
}

// match reports whether the slash-separated relative path name matches.
func (g *filesetPattern) match(name string) bool {
	parts := strings.Split(name, "/")
	for _, segs := range g.alts {
		if matchSegments(segs, parts) {
			return true
		}
	}
	return false
}

// matchSegments matches pattern segments against path parts, "**" standing
// for any number of parts. It remembers failed (segment, part) pairs so a
// pattern full of "**" stays polynomial.
func matchSegments(segs, parts []string) bool {
	failed := make(map[[2]int]bool)
	var rec func(i, j int) bool
	rec = func(i, j int) bool {
		if failed[[2]int{i, j}] {
			return false
		}
		ok := false
		switch {
		case i == len(segs):
			ok = j == len(parts)
		case segs[i] == "**":
			ok = rec(i+1, j) || (j < len(parts) && rec(i, j+1))
		case j < len(parts):
			m, _ := path.Match(segs[i], parts[j])
			ok = m && rec(i+1, j+1)
		}
		if !ok {
			failed[[2]int{i, j}] = true
		}
		return ok
	}
	return rec(0, 0)
}

// bangToCaret rewrites the shell's "[!...]" class negation into the "[^...]"
// that path.Match understands.
func bangToCaret(seg string) string {
	b := []byte(seg)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '[':
			if i+1 < len(b) && b[i+1] == '!' {
				b[i+1] = '^'
			}
			// Skip to the end of the class so a "[" inside it is literal.
			for i++; i < len(b) && b[i] != ']'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		}
	}
	return string(b)
}

// expandBraces expands every "{a,b}" group (nested groups too) into
// separate patterns, leaving escapesRoot and character classes alone.
func expandBraces(pattern string) ([]string, error) {
	var out []string
	var rec func(p string) error
	rec = func(p string) error {
		open, closing, commas, err := firstBraceGroup(p)
		if err != nil {
			return err
		}
		if open < 0 {
			if len(out) >= maxFilesetAlternatives {
				return fmt.Errorf("pattern %q expands to more than %d alternatives", pattern, maxFilesetAlternatives)
			}
			out = append(out, p)
			return nil
		}
		prefix, suffix := p[:open], p[closing+1:]
		start := open + 1
		for _, c := range append(commas, closing) {
			if err := rec(prefix + p[start:c] + suffix); err != nil {
				return err
			}
			start = c + 1
		}
		return nil
	}
	if err := rec(pattern); err != nil {
		return nil, err
	}
	return out, nil
}

// firstBraceGroup finds the first top-level "{", its matching "}", and the
// top-level commas between them. open is -1 if there is no group.
func firstBraceGroup(p string) (open, closing int, commas []int, err error) {
	open, depth := -1, 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
		case '[':
			for i++; i < len(p) && p[i] != ']'; i++ {
				if p[i] == '\\' {
					i++
				}
			}
		case '{':
			if depth == 0 {
				open = i
			}
			depth++
		case ',':
			if depth == 1 {
				commas = append(commas, i)
			}
		case '}':
			if depth == 0 {
				continue // a stray "}" is literal
			}
			depth--
			if depth == 0 {
				return open, i, commas, nil
			}
		}
	}
	if open >= 0 {
		return 0, 0, nil, fmt.Errorf("pattern %q: unclosed \"{\": %w", p, path.ErrBadPattern)
	}
	return -1, 0, nil, nil
}

// ContentHash returns "sha256:<hex>" over the named files of fsys: what
// identifies a recipe and the files it refers to. Paths are checked with
// ResolvePath, so "./a" and "a" are the same file, duplicates count once,
// and order does not matter. Each file contributes its path and content,
// each length-prefixed, so moving bytes between names or files always
// changes the hash. Content is streamed, not held in memory.
func ContentHash(fsys fs.FS, paths []string) (string, error) {
	clean := make([]string, 0, len(paths))
	for _, p := range paths {
		c, err := ResolvePath(p)
		if err != nil {
			return "", fmt.Errorf("content hash: %w", err)
		}
		clean = append(clean, c)
	}
	slices.Sort(clean)
	clean = slices.Compact(clean)

	h := sha256.New()
	io.WriteString(h, "kiln content hash v1\x00")
	var n [8]byte
	for _, p := range clean {
		size, sum, err := hashRecipeFile(fsys, p)
		if err != nil {
			return "", fmt.Errorf("content hash %q: %w", p, err)
		}
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		io.WriteString(h, p)
		binary.BigEndian.PutUint64(n[:], uint64(size))
		h.Write(n[:])
		h.Write(sum)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// hashRecipeFile returns the length and SHA-256 of one regular file.
func hashRecipeFile(fsys fs.FS, p string) (int64, []byte, error) {
	f, err := fsys.Open(p)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return 0, nil, err
	}
	if !info.Mode().IsRegular() {
		return 0, nil, fmt.Errorf("not a regular file (%v)", info.Mode().Type())
	}
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return 0, nil, err
	}
	return size, h.Sum(nil), nil
}
