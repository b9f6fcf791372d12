package bake

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Bundle formats accepted by WriteBundle.
const (
	// BundleTarGz is a gzip-compressed tar archive (.tar.gz, .tgz).
	BundleTarGz = "tar.gz"
	// BundleZip is a zip archive (.zip).
	BundleZip = "zip"
)

// ErrBundleLimit is matched (with errors.Is) by an error from OpenBundle
// that refuses a bundle for being too large: too many entries, a file, the
// total or the compressed size over its limit, or an expansion ratio that
// marks a compression bomb.
var ErrBundleLimit = errors.New("bundle limit exceeded")

// ErrInvalidBundle is matched (with errors.Is) by an error from OpenBundle
// that refuses a bundle for its format or content: corrupt or truncated
// data, an unknown format, duplicate entries, devices and FIFOs, sparse or
// encrypted entries, or a symlink loop. Unsafe names and links match
// ErrUnsafePath instead.
var ErrInvalidBundle = errors.New("invalid bundle")

// BundleLimits bounds what OpenBundle reads from an untrusted bundle. A
// field that is zero or negative takes its value from DefaultBundleLimits.
type BundleLimits struct {
	// MaxCompressedSize is the largest bundle accepted, in bytes as uploaded.
	MaxCompressedSize int64
	// MaxTotalSize is the largest sum of the sizes of the files inside.
	MaxTotalSize int64
	// MaxEntries is the most entries the archive may hold, and also the most
	// files, folders and links the recipe root may end up with (folders
	// implied by deep names count too).
	MaxEntries int
	// MaxFileSize is the largest single file inside.
	MaxFileSize int64
	// MaxRatio is the most times the content may be larger than the bundle,
	// so a small compression bomb is refused early. Bundles whose content is
	// under 1 MiB are not held to it, since tiny archives compress oddly.
	MaxRatio int64
}

// DefaultBundleLimits returns the limits OpenBundle applies unless told
// otherwise: 64 MiB compressed, 256 MiB in all, 10,000 entries, 64 MiB per
// file, and an expansion ratio of 100:1.
func DefaultBundleLimits() BundleLimits {
	return BundleLimits{
		MaxCompressedSize: 64 << 20,
		MaxTotalSize:      256 << 20,
		MaxEntries:        10_000,
		MaxFileSize:       64 << 20,
		MaxRatio:          100,
	}
}

// withDefaults fills unset fields from DefaultBundleLimits.
func (l BundleLimits) withDefaults() BundleLimits {
	d := DefaultBundleLimits()
	if l.MaxCompressedSize <= 0 {
		l.MaxCompressedSize = d.MaxCompressedSize
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = d.MaxTotalSize
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = d.MaxFileSize
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = d.MaxRatio
	}
	return l
}

const (
	// ratioFloor is the content size under which MaxRatio is not applied.
	ratioFloor = 1 << 20
	// maxTarTrailer is how much data may follow a tar's end-of-archive
	// marker inside the gzip stream: tar pads to its record size (10 KiB by
	// default), and nothing real is larger.
	maxTarTrailer = 1 << 20
	// tarOverheadPerEntry allows for each entry's header blocks, padding
	// and long-name records when bounding the inflated tar stream.
	tarOverheadPerEntry = 4 << 10
	// maxLinkDepth bounds a chain of symlinks, as Linux's ELOOP does.
	maxLinkDepth = 40
	// macOSJunk is the folder of resource forks that macOS's Finder adds
	// to a zip; it is dropped.
	macOSJunk = "__MACOSX"
)

// OpenBundle reads a recipe bundle (a gzip-compressed tar or a zip of a
// recipe folder) of size bytes from r into memory and returns it as a
// read-only fs.FS rooted at the recipe folder. Nothing is written to disk.
// The format is told by the first bytes; name (used in messages) only hints
// at it, for a zip with data before it.
//
// The bundle is untrusted and is refused, with an error naming the bundle
// and the entry, for: absolute names, ".." components, NUL bytes or
// backslashes in names; duplicate entries; devices, FIFOs, sparse and
// encrypted entries; symlinks or hard links that lead outside the root,
// link loops and chains longer than 40; and any of limits exceeded. Limits
// are enforced before and while reading: a size a header declares can only
// get an entry refused sooner, no read goes past it, and every byte the
// gzip stream inflates to is counted, so a compression bomb is stopped long
// before it is fully inflated.
//
// Symlinks inside the root are kept and resolved in memory: Open, Stat and
// ReadFile follow them; ReadDir and fs.WalkDir report them as links. Hard
// links become regular files sharing their target's content. A bundle
// whose entries all sit under one top folder ("myrecipe/...") is unwrapped
// so that folder is the root, and a "__MACOSX/" folder is dropped.
// Modification times are not kept.
func OpenBundle(r io.ReaderAt, size int64, name string, limits BundleLimits) (fs.FS, error) {
	fsys, err := openBundle(r, size, name, limits.withDefaults())
	if err != nil {
		return nil, fmt.Errorf("open bundle %q: %w", name, err)
	}
	return fsys, nil
}

func openBundle(r io.ReaderAt, size int64, name string, limits BundleLimits) (*memFS, error) {
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrInvalidBundle, size)
	}
	if size > limits.MaxCompressedSize {
		return nil, fmt.Errorf("%w: bundle is %s, over the %s limit", ErrBundleLimit, formatBundleSize(size), formatBundleSize(limits.MaxCompressedSize))
	}
	br := &bundleReader{limits: limits, size: size}
	br.ratioBudget = max(mulSaturating(limits.MaxRatio, size), ratioFloor)

	var magic [4]byte
	n, err := r.ReadAt(magic[:], 0)
	if n < len(magic) && err != nil && err != io.EOF {
		return nil, fmt.Errorf("read: %w", err)
	}
	switch m := string(magic[:n]); {
	case strings.HasPrefix(m, "\x1f\x8b"):
		if err := br.readTarGz(io.NewSectionReader(r, 0, size)); err != nil {
			return nil, err
		}
	case m == "PK\x03\x04" || m == "PK\x05\x06" || m == "PK\x07\x08":
		if err := br.readZip(r, size); err != nil {
			return nil, err
		}
	case strings.HasSuffix(strings.ToLower(name), ".zip"):
		// A zip may have data before it, as a self-extracting one does.
		if err := br.readZip(r, size); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: not a gzip-compressed tar (.tar.gz) or a zip archive (.zip)", ErrInvalidBundle)
	}
	return br.build()
}

// bundleEntryKind is what a bundle entry holds.
type bundleEntryKind int

const (
	bundleFile bundleEntryKind = iota
	bundleDir
	bundleSymlink
	bundleHardlink
)

// bundleEntry is one archive entry as read, before it is placed in the tree.
type bundleEntry struct {
	name string // clean, relative to the archive's root; "." for the root
	kind bundleEntryKind
	perm fs.FileMode
	data []byte
	link string // symlink target as written, or clean hard-link target
}

// bundleReader reads an archive's entries while enforcing the limits.
type bundleReader struct {
	limits      BundleLimits
	size        int64 // compressed size
	ratioBudget int64 // content allowed by MaxRatio
	total       int64 // content read so far
	entries     int
	out         []bundleEntry
}

// countEntry counts one more archive entry against MaxEntries.
func (br *bundleReader) countEntry(name string) error {
	br.entries++
	if br.entries > br.limits.MaxEntries {
		return bundleLimitError(name, "bundle has more than %d entries", br.limits.MaxEntries)
	}
	return nil
}

// checkGrowth reports whether a file of n bytes more for entry would break
// a limit.
func (br *bundleReader) checkGrowth(entry string, n int64) error {
	if n > br.limits.MaxFileSize {
		return bundleLimitError(entry, "file is %s, over the %s limit", formatBundleSize(n), formatBundleSize(br.limits.MaxFileSize))
	}
	return br.checkTotal(entry, br.total+n)
}

// checkTotal reports whether content of total bytes in all would break a
// limit.
func (br *bundleReader) checkTotal(entry string, total int64) error {
	switch {
	case total > br.limits.MaxTotalSize:
		return bundleLimitError(entry, "bundle content is over the %s limit", formatBundleSize(br.limits.MaxTotalSize))
	case total > br.ratioBudget:
		return br.ratioError(entry)
	}
	return nil
}

func (br *bundleReader) ratioError(entry string) error {
	return bundleLimitError(entry, "bundle expands more than %d times its compressed size of %s", br.limits.MaxRatio, formatBundleSize(br.size))
}

// readTarGz reads a gzip-compressed tar. The inflated stream is counted as
// it is read, so tar headers, padding and trailing data are bounded too,
// not only the file content.
func (br *bundleReader) readTarGz(r io.Reader) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	overhead := mulSaturating(int64(br.limits.MaxEntries), tarOverheadPerEntry) + maxTarTrailer
	stream := &boundedReader{r: zr, max: min(br.ratioBudget, br.limits.MaxTotalSize+overhead)}
	current := ""
	streamErr := func(err error) error {
		if stream.n > stream.max {
			if stream.max == br.ratioBudget {
				return br.ratioError(current)
			}
			return bundleLimitError(current, "bundle expands to more than %s", formatBundleSize(stream.max))
		}
		return invalidBundleError(current, err)
	}

	tr := tar.NewReader(stream)
	for {
		current = "" // a bad header is not the previous entry's fault
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return streamErr(err)
		}
		current = hdr.Name
		if err := br.countEntry(hdr.Name); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // metadata for the entries that follow; nothing to keep
		}
		e, err := br.tarEntry(tr, hdr)
		if err != nil {
			if errors.Is(err, ErrBundleLimit) || errors.Is(err, ErrUnsafePath) || errors.Is(err, ErrInvalidBundle) {
				return err
			}
			return streamErr(err)
		}
		br.out = append(br.out, e)
	}
	// Read what follows the end-of-archive marker, so the gzip checksum is
	// verified, but refuse a tar that hides more data there.
	current = ""
	n, err := io.Copy(io.Discard, io.LimitReader(stream, maxTarTrailer+1))
	if err != nil {
		return streamErr(err)
	}
	if n > maxTarTrailer {
		return invalidBundleError("", fmt.Errorf("more than %s of data after the end of the tar archive", formatBundleSize(maxTarTrailer)))
	}
	return nil
}

// tarEntry checks one tar header and reads its content.
func (br *bundleReader) tarEntry(tr *tar.Reader, hdr *tar.Header) (bundleEntry, error) {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return bundleEntry{}, invalidBundleError(hdr.Name, errors.New("device and FIFO entries are not allowed"))
	default:
		return bundleEntry{}, invalidBundleError(hdr.Name, fmt.Errorf("unsupported entry type %q", hdr.Typeflag))
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return bundleEntry{}, invalidBundleError(hdr.Name, errors.New("sparse files are not supported"))
		}
	}
	name, err := cleanEntryName(hdr.Name)
	if err != nil {
		return bundleEntry{}, err
	}
	e := bundleEntry{name: name, perm: fs.FileMode(hdr.Mode) & fs.ModePerm}
	switch hdr.Typeflag {
	case tar.TypeReg:
		e.kind = bundleFile
		if hdr.Size < 0 {
			return bundleEntry{}, invalidBundleError(hdr.Name, fmt.Errorf("negative size %d", hdr.Size))
		}
		if err := br.checkGrowth(hdr.Name, hdr.Size); err != nil {
			return bundleEntry{}, err
		}
		// tar.Reader never returns more than hdr.Size, the size just checked.
		if e.data, err = readAtMost(tr, hdr.Size); err != nil {
			return bundleEntry{}, err
		}
		br.total += int64(len(e.data))
	case tar.TypeDir:
		e.kind = bundleDir
	case tar.TypeSymlink:
		e.kind = bundleSymlink
		e.link = hdr.Linkname
		if err := checkLinkSyntax(name, e.link); err != nil {
			return bundleEntry{}, err
		}
	case tar.TypeLink:
		e.kind = bundleHardlink
		if e.link, err = cleanEntryName(hdr.Linkname); err != nil {
			return bundleEntry{}, &UnsafePathError{Path: hdr.Name, Reason: fmt.Sprintf("hard link to %q: %s", hdr.Linkname, unsafeReason(err))}
		}
	}
	return e, nil
}

// readZip reads a zip archive. archive/zip reads the whole central
// directory up front, so the entries are counted before it is called.
func (br *bundleReader) readZip(r io.ReaderAt, size int64) error {
	n, err := countZipHeaders(r, size)
	if err != nil {
		return invalidBundleError("", err)
	}
	if n > br.limits.MaxEntries {
		return bundleLimitError("", "bundle has more than %d entries", br.limits.MaxEntries)
	}
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return invalidBundleError("", err)
	}
	// Refuse an honest bomb from its central directory before inflating
	// anything; a dishonest one is caught while reading below.
	var declared int64
	for _, f := range zr.File {
		if f.Mode().IsDir() || strings.HasSuffix(f.Name, "/") {
			continue
		}
		size := int64(min(f.UncompressedSize64, 1<<40))
		if err := br.checkGrowth(f.Name, size); err != nil {
			return err
		}
		declared += size
		if err := br.checkTotal(f.Name, declared); err != nil {
			return err
		}
	}
	for _, f := range zr.File {
		if err := br.countEntry(f.Name); err != nil {
			return err
		}
		e, err := br.zipEntry(f)
		if err != nil {
			return err
		}
		br.out = append(br.out, e)
	}
	return nil
}

// zipEntry checks one zip entry and reads its content.
func (br *bundleReader) zipEntry(f *zip.File) (bundleEntry, error) {
	const irregular = fs.ModeDevice | fs.ModeCharDevice | fs.ModeNamedPipe | fs.ModeSocket | fs.ModeIrregular
	mode := f.Mode()
	if mode&irregular != 0 {
		return bundleEntry{}, invalidBundleError(f.Name, errors.New("device and FIFO entries are not allowed"))
	}
	name, err := cleanEntryName(f.Name)
	if err != nil {
		return bundleEntry{}, err
	}
	e := bundleEntry{name: name, perm: mode.Perm()}
	if mode.IsDir() || strings.HasSuffix(f.Name, "/") {
		e.kind = bundleDir
		return e, nil
	}
	if f.Flags&0x1 != 0 {
		return bundleEntry{}, invalidBundleError(f.Name, errors.New("encrypted entries are not supported"))
	}
	limit := int64(min(f.UncompressedSize64, 1<<40))
	if mode&fs.ModeSymlink != 0 && limit > maxRecipePathLen {
		return bundleEntry{}, &UnsafePathError{Path: f.Name, Reason: fmt.Sprintf("symlink target longer than %d bytes", maxRecipePathLen)}
	}
	if err := br.checkGrowth(f.Name, limit); err != nil {
		return bundleEntry{}, err
	}
	rc, err := f.Open()
	if err != nil {
		return bundleEntry{}, invalidBundleError(f.Name, err)
	}
	defer rc.Close()
	// Never read more than the header declared and the limits allow.
	data, err := readAtMost(rc, limit)
	if errors.Is(err, zip.ErrFormat) {
		// archive/zip's own check that the data is no longer than declared.
		err = fmt.Errorf("content is corrupt or larger than its header says (%d bytes): %w", limit, err)
	}
	if err != nil {
		return bundleEntry{}, invalidBundleError(f.Name, err)
	}
	br.total += int64(len(data))
	if mode&fs.ModeSymlink != 0 {
		e.kind, e.link = bundleSymlink, string(data)
		return e, checkLinkSyntax(name, e.link)
	}
	e.kind, e.data = bundleFile, data
	return e, nil
}

// readAtMost reads r to its end, failing if it holds more than n bytes.
// Reading to the end lets archive/zip verify the CRC.
func readAtMost(r io.Reader, n int64) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(int(min(n, 1<<20)))
	if _, err := buf.ReadFrom(io.LimitReader(r, n+1)); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > n {
		return nil, fmt.Errorf("content is larger than its header says (%d bytes)", n)
	}
	return buf.Bytes(), nil
}

// countZipHeaders returns an upper bound on the number of central
// directory headers archive/zip will read: how often their signature
// occurs anywhere in the archive. archive/zip reads headers until one is
// bad, whatever count the archive claims, so this is what bounds it.
func countZipHeaders(r io.ReaderAt, size int64) (int, error) {
	sig := []byte("PK\x01\x02")
	buf := make([]byte, min(size, 1<<20))
	count := 0
	for off := int64(0); off < size; {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if n == 0 && err != nil {
			return 0, err
		}
		count += bytes.Count(buf[:n], sig)
		if off+int64(n) >= size {
			break
		}
		// Step back so a signature across the boundary is seen once.
		off += int64(max(n-len(sig)+1, 1))
	}
	return count, nil
}

// boundedReader fails once more than max bytes have been read through it.
type boundedReader struct {
	r   io.Reader
	n   int64
	max int64
}

var errStreamLimit = errors.New("stream limit reached")

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n > b.max {
		return 0, errStreamLimit
	}
	if rem := b.max - b.n + 1; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.max {
		return 0, errStreamLimit
	}
	return n, err
}

// build places the entries read into an in-memory tree, unwrapping a
// single top folder.
func (br *bundleReader) build() (*memFS, error) {
	entries := slices.DeleteFunc(br.out, func(e bundleEntry) bool {
		return e.name == macOSJunk || strings.HasPrefix(e.name, macOSJunk+"/")
	})
	if top := wrapperDir(entries); top != "" {
		for i := range entries {
			entries[i].name = stripWrapper(top, entries[i].name)
			if entries[i].kind == bundleHardlink {
				entries[i].link = stripWrapper(top, entries[i].link)
			}
		}
	}
	b := newMemBuilder(br.limits.MaxEntries)
	for _, e := range entries {
		if err := b.add(e); err != nil {
			return nil, err
		}
	}
	return b.finish()
}

// wrapperDir returns the one top folder every entry sits in, or "".
func wrapperDir(entries []bundleEntry) string {
	top := ""
	for _, e := range entries {
		if e.name == "." {
			continue
		}
		first, _, nested := strings.Cut(e.name, "/")
		if !nested && e.kind != bundleDir {
			return "" // a file at the top
		}
		if top == "" {
			top = first
		} else if first != top {
			return ""
		}
	}
	return top
}

// stripWrapper makes name relative to top if it lies in it.
func stripWrapper(top, name string) string {
	if name == top {
		return "."
	}
	if rest, ok := strings.CutPrefix(name, top+"/"); ok {
		return rest
	}
	return name
}

// cleanEntryName checks an archive entry's name and cleans it. Unlike
// ResolvePath, it refuses every ".." component: no honest archiver writes
// one.
func cleanEntryName(name string) (string, error) {
	if why := pathSyntaxProblem(name); why != "" {
		return "", &UnsafePathError{Path: name, Reason: why}
	}
	for elem := range strings.SplitSeq(name, "/") {
		if elem == ".." {
			return "", &UnsafePathError{Path: name, Reason: `contains a ".." component`}
		}
	}
	return path.Clean(name), nil
}

// checkLinkSyntax checks a symlink's target by its spelling: it must be
// relative and must not climb above the root from where the link sits.
// Where it really leads is checked once the tree is complete.
func checkLinkSyntax(name, target string) error {
	if why := pathSyntaxProblem(target); why != "" {
		return &UnsafePathError{Path: name, Reason: fmt.Sprintf("symlink to %q: %s", target, why)}
	}
	if escapesRoot(path.Join(path.Dir(name), target)) {
		return &UnsafePathError{Path: name, Reason: fmt.Sprintf("symlink to %q leads outside the bundle", target)}
	}
	return nil
}

// unsafeReason returns the reason of an *UnsafePathError, or its message.
func unsafeReason(err error) string {
	if u, ok := errors.AsType[*UnsafePathError](err); ok {
		return u.Reason
	}
	return err.Error()
}

func bundleLimitError(entry, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if entry == "" {
		return fmt.Errorf("%w: %s", ErrBundleLimit, msg)
	}
	return fmt.Errorf("entry %q: %w: %s", entry, ErrBundleLimit, msg)
}

func invalidBundleError(entry string, err error) error {
	if entry == "" {
		return fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	return fmt.Errorf("entry %q: %w: %w", entry, ErrInvalidBundle, err)
}

// mulSaturating multiplies non-negative a and b, saturating instead of overflowing.
func mulSaturating(a, b int64) int64 {
	if a != 0 && b > (1<<63-1)/a {
		return 1<<63 - 1
	}
	return a * b
}

// formatBundleSize writes n bytes for people: "64 MiB", "1.5 KiB", "12 bytes".
func formatBundleSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	suffixes := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(n)/unit, 0
	for v >= unit && i < len(suffixes)-1 {
		v /= unit
		i++
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %s", int64(v), suffixes[i])
	}
	return fmt.Sprintf("%.1f %s", v, suffixes[i])
}

// memNode is a file, folder or symlink in a memFS.
type memNode struct {
	name     string
	mode     fs.FileMode
	parent   *memNode // nil for the root
	data     []byte   // file content, shared by hard links
	target   string   // symlink target as written
	children map[string]*memNode
	names    []string // sorted child names, set by finish

	explicit bool // a folder that had its own entry, for finding duplicates

	// Symlink resolution, done once by finish.
	linkState int // 0 unresolved, 1 resolving, 2 done
	resolved  *memNode
	linkDepth int
	linkErr   error
}

func (n *memNode) isDir() bool     { return n.mode.IsDir() }
func (n *memNode) isSymlink() bool { return n.mode&fs.ModeSymlink != 0 }

var (
	errLinkEscapes = errors.New("leads outside the root")
	errLinkLoop    = errors.New("too many levels of symbolic links")
	errLinkNotDir  = fmt.Errorf("not a directory: %w", fs.ErrNotExist)
)

// memBuilder assembles a memFS, refusing entries that clash.
type memBuilder struct {
	root     *memNode
	nodes    int
	maxNodes int
	links    []*memNode
	paths    map[*memNode]string // symlinks' paths, for messages
}

func newMemBuilder(maxNodes int) *memBuilder {
	return &memBuilder{
		root:     &memNode{name: ".", mode: fs.ModeDir | 0o755, children: map[string]*memNode{}, explicit: true},
		maxNodes: maxNodes,
		paths:    map[*memNode]string{},
	}
}

// newNode counts a node against maxNodes.
func (b *memBuilder) newNode(name string, n *memNode) (*memNode, error) {
	b.nodes++
	if b.nodes > b.maxNodes {
		return nil, bundleLimitError(name, "bundle has more than %d files, folders and links", b.maxNodes)
	}
	return n, nil
}

// add places one entry, creating the folders it sits in.
func (b *memBuilder) add(e bundleEntry) error {
	if e.name == "." {
		if e.kind != bundleDir {
			return invalidBundleError(e.name, errors.New("the root must be a folder"))
		}
		return nil
	}
	elems := strings.Split(e.name, "/")
	dir := b.root
	for i, elem := range elems[:len(elems)-1] {
		child := dir.children[elem]
		switch {
		case child == nil:
			var err error
			child, err = b.newNode(e.name, &memNode{name: elem, mode: fs.ModeDir | 0o755, parent: dir, children: map[string]*memNode{}})
			if err != nil {
				return err
			}
			dir.children[elem] = child
		case child.isSymlink():
			// Writing through a link is how extraction attacks escape.
			return &UnsafePathError{Path: e.name, Reason: fmt.Sprintf("its folder %q is a symlink", strings.Join(elems[:i+1], "/"))}
		case !child.isDir():
			return invalidBundleError(e.name, fmt.Errorf("its folder %q is a file", strings.Join(elems[:i+1], "/")))
		}
		dir = child
	}
	base := elems[len(elems)-1]
	if old := dir.children[base]; old != nil {
		if old.isDir() && !old.explicit && e.kind == bundleDir {
			old.explicit = true
			old.mode = fs.ModeDir | e.perm
			return nil
		}
		return invalidBundleError(e.name, errors.New("duplicate entry"))
	}
	n, err := b.newNode(e.name, &memNode{name: base, parent: dir})
	if err != nil {
		return err
	}
	switch e.kind {
	case bundleFile:
		n.mode, n.data = e.perm, e.data
	case bundleDir:
		n.mode, n.children, n.explicit = fs.ModeDir|e.perm, map[string]*memNode{}, true
	case bundleSymlink:
		if err := checkLinkSyntax(e.name, e.link); err != nil {
			return err
		}
		n.mode, n.target = fs.ModeSymlink|0o777, e.link
		b.links = append(b.links, n)
		b.paths[n] = e.name
	case bundleHardlink:
		t := b.lookupExact(e.link)
		switch {
		case t == nil:
			return invalidBundleError(e.name, fmt.Errorf("hard link target %q is not an earlier entry", e.link))
		case !t.mode.IsRegular():
			return invalidBundleError(e.name, fmt.Errorf("hard link target %q is not a regular file", e.link))
		}
		n.mode, n.data = t.mode, t.data
	}
	dir.children[base] = n
	return nil
}

// lookupExact finds the node at the clean path name without following links.
func (b *memBuilder) lookupExact(name string) *memNode {
	n := b.root
	for elem := range strings.SplitSeq(name, "/") {
		if n.children == nil {
			return nil
		}
		if n = n.children[elem]; n == nil {
			return nil
		}
	}
	return n
}

// finish resolves every symlink, refusing any that escapesRoot or loops, and
// sorts the folders.
func (b *memBuilder) finish() (*memFS, error) {
	fsys := &memFS{root: b.root}
	for _, n := range b.links {
		_, _, err := fsys.resolveLink(n)
		switch {
		case errors.Is(err, errLinkEscapes):
			return nil, &UnsafePathError{Path: b.paths[n], Reason: fmt.Sprintf("symlink to %q leads outside the bundle", n.target)}
		case errors.Is(err, errLinkLoop):
			return nil, invalidBundleError(b.paths[n], fmt.Errorf("symlink to %q: loop or chain of more than %d links", n.target, maxLinkDepth))
		}
		// A dangling link is allowed: opening it fails like a missing file.
	}
	var sortDir func(n *memNode)
	sortDir = func(n *memNode) {
		n.names = slices.Sorted(maps.Keys(n.children))
		for _, c := range n.children {
			if c.isDir() {
				sortDir(c)
			}
		}
	}
	sortDir(b.root)
	return fsys, nil
}

// memFS is the read-only in-memory tree of a bundle. It is immutable once
// built, so safe for concurrent use.
type memFS struct {
	root *memNode
}

// walk resolves the slash-separated path p from start, as the kernel would:
// ".." moves to the real parent, and symlinks are followed in every
// component but the last, which is followed only if followLast. It returns
// the node and the length of the longest link chain used.
func (fsys *memFS) walk(start *memNode, p string, followLast bool) (*memNode, int, error) {
	cur, depth := start, 0
	for rest := p; rest != ""; {
		var elem string
		elem, rest, _ = strings.Cut(rest, "/")
		if elem == "" || elem == "." {
			continue
		}
		if !cur.isDir() {
			return nil, 0, errLinkNotDir
		}
		if elem == ".." {
			if cur.parent == nil {
				return nil, 0, errLinkEscapes
			}
			cur = cur.parent
			continue
		}
		next := cur.children[elem]
		if next == nil {
			return nil, 0, fs.ErrNotExist
		}
		if next.isSymlink() && (rest != "" || followLast) {
			t, d, err := fsys.resolveLink(next)
			if err != nil {
				return nil, 0, err
			}
			next, depth = t, max(depth, d)
		}
		cur = next
	}
	return cur, depth, nil
}

// resolveLink returns what the symlink n finally leads to, computing it on
// first use and remembering it, so lookups cost no more than the path.
func (fsys *memFS) resolveLink(n *memNode) (*memNode, int, error) {
	switch n.linkState {
	case 2:
		return n.resolved, n.linkDepth, n.linkErr
	case 1:
		return nil, 0, errLinkLoop
	}
	n.linkState = 1
	t, d, err := fsys.walk(n.parent, n.target, true)
	d++
	if err == nil && d > maxLinkDepth {
		t, err = nil, errLinkLoop
	}
	n.linkState, n.resolved, n.linkDepth, n.linkErr = 2, t, d, err
	return t, d, err
}

func (fsys *memFS) lookup(op, name string, followLast bool) (*memNode, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	n, _, err := fsys.walk(fsys.root, name, followLast)
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return n, nil
}

// Open opens the named file or folder, following symlinks.
func (fsys *memFS) Open(name string) (fs.File, error) {
	n, err := fsys.lookup("open", name, true)
	if err != nil {
		return nil, err
	}
	info := memInfo{name: path.Base(name), node: n}
	if n.isDir() {
		return &memDir{info: info}, nil
	}
	return &memFile{info: info, r: bytes.NewReader(n.data)}, nil
}

// ReadFile returns a copy of the named file's content.
func (fsys *memFS) ReadFile(name string) ([]byte, error) {
	n, err := fsys.lookup("readfile", name, true)
	if err != nil {
		return nil, err
	}
	if n.isDir() {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: errors.New("is a directory")}
	}
	return append([]byte{}, n.data...), nil
}

// ReadDir lists the named folder, sorted by name.
func (fsys *memFS) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := fsys.lookup("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if !n.isDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	return n.entries(0, len(n.names)), nil
}

// Stat describes the named file, following symlinks.
func (fsys *memFS) Stat(name string) (fs.FileInfo, error) {
	n, err := fsys.lookup("stat", name, true)
	if err != nil {
		return nil, err
	}
	return memInfo{name: path.Base(name), node: n}, nil
}

// Lstat describes the named file without following a final symlink.
func (fsys *memFS) Lstat(name string) (fs.FileInfo, error) {
	n, err := fsys.lookup("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return memInfo{name: path.Base(name), node: n}, nil
}

// ReadLink returns the target of the named symlink as written in the bundle.
func (fsys *memFS) ReadLink(name string) (string, error) {
	n, err := fsys.lookup("readlink", name, false)
	if err != nil {
		return "", err
	}
	if !n.isSymlink() {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return n.target, nil
}

func (n *memNode) entries(from, to int) []fs.DirEntry {
	out := make([]fs.DirEntry, 0, to-from)
	for _, name := range n.names[from:to] {
		out = append(out, fs.FileInfoToDirEntry(memInfo{name: name, node: n.children[name]}))
	}
	return out
}

// memInfo is the fs.FileInfo of a memNode under the name it was reached by.
type memInfo struct {
	name string
	node *memNode
}

func (i memInfo) Name() string { return i.name }
func (i memInfo) Size() int64 {
	if i.node.isSymlink() {
		return int64(len(i.node.target))
	}
	return int64(len(i.node.data))
}
func (i memInfo) Mode() fs.FileMode  { return i.node.mode }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return i.node.isDir() }
func (i memInfo) Sys() any           { return nil }

// memFile is an open regular file of a memFS.
type memFile struct {
	info memInfo
	r    *bytes.Reader
}

func (f *memFile) Stat() (fs.FileInfo, error)                   { return f.info, nil }
func (f *memFile) Read(p []byte) (int, error)                   { return f.r.Read(p) }
func (f *memFile) ReadAt(p []byte, off int64) (int, error)      { return f.r.ReadAt(p, off) }
func (f *memFile) Seek(offset int64, whence int) (int64, error) { return f.r.Seek(offset, whence) }
func (f *memFile) Close() error                                 { return nil }

// memDir is an open folder of a memFS.
type memDir struct {
	info memInfo
	off  int
}

func (d *memDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *memDir) Close() error               { return nil }
func (d *memDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}

// ReadDir reads the folder's entries as fs.ReadDirFile says.
func (d *memDir) ReadDir(count int) ([]fs.DirEntry, error) {
	n := d.info.node
	rest := len(n.names) - d.off
	if count > 0 && rest == 0 {
		return nil, io.EOF
	}
	if count > 0 {
		rest = min(rest, count)
	}
	out := n.entries(d.off, d.off+rest)
	d.off += rest
	return out, nil
}

// BundleFormatFromName returns the bundle format an output file's name asks
// for: BundleTarGz for ".tar.gz" or ".tgz", BundleZip for ".zip".
func BundleFormatFromName(name string) (string, error) {
	lower := strings.ToLower(name)
	switch {
	case strings.HasSuffix(lower, ".tar.gz"), strings.HasSuffix(lower, ".tgz"):
		return BundleTarGz, nil
	case strings.HasSuffix(lower, ".zip"):
		return BundleZip, nil
	}
	return "", fmt.Errorf("bundle format of %q: want a name ending in .tar.gz, .tgz or .zip", name)
}

// bundleSkippedDirs are folders WriteBundle leaves out wherever they are.
var bundleSkippedDirs = map[string]bool{".git": true, ".terraform": true, "packer_cache": true}

// bundleSkipsFile reports whether WriteBundle leaves out a file by its name:
// earlier bundles and other archives, which are build outputs.
func bundleSkipsFile(name string) bool {
	lower := strings.ToLower(name)
	return strings.HasSuffix(lower, ".tar.gz") || strings.HasSuffix(lower, ".tgz") || strings.HasSuffix(lower, ".zip")
}

// bundleSource is one file or folder WriteBundle puts in a bundle.
type bundleSource struct {
	name string // path in the bundle; folders end in "/"
	dir  bool
	exec bool
}

// zipEpoch is the earliest time a zip can record, used for every entry.
var zipEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// WriteBundle writes the recipe folder dir to w as a bundle in format
// (BundleTarGz or BundleZip), for `kiln bundle DIR -o FILE`. The bundle is
// deterministic: entries sorted by path, times zeroed, owners and groups
// zeroed, modes 0644 or 0755 from the executable bit, so the same folder
// always gives the same bytes. It holds regular files and folders only: a
// symlink to a file inside dir is stored as that file, while a symlink
// that leads outside dir, to a folder, or nowhere is an error. It leaves
// out .git, .terraform and packer_cache folders and .tar.gz, .tgz and .zip
// files. WriteBundle does not check OpenBundle's limits. On error, w may
// hold part of a bundle.
func WriteBundle(dir string, w io.Writer, format string) error {
	if format != BundleTarGz && format != BundleZip {
		return fmt.Errorf("write bundle %q: unknown format %q, want %q or %q", dir, format, BundleTarGz, BundleZip)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("write bundle %q: %w", dir, err)
	}
	defer root.Close()
	fsys := root.FS()
	srcs, err := bundleSources(fsys)
	if err != nil {
		return fmt.Errorf("write bundle %q: %w", dir, err)
	}
	if format == BundleTarGz {
		err = writeBundleTarGz(fsys, srcs, w)
	} else {
		err = writeBundleZip(fsys, srcs, w)
	}
	if err != nil {
		return fmt.Errorf("write bundle %q: %w", dir, err)
	}
	return nil
}

// bundleSources lists what goes into a bundle of fsys, sorted by name.
func bundleSources(fsys fs.FS) ([]bundleSource, error) {
	var srcs []bundleSource
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if bundleSkippedDirs[d.Name()] {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			srcs = append(srcs, bundleSource{name: p + "/", dir: true})
			return nil
		}
		if bundleSkipsFile(d.Name()) {
			return nil
		}
		var info fs.FileInfo
		switch t := d.Type(); {
		case t.IsRegular():
			info, err = d.Info()
		case t&fs.ModeSymlink != 0:
			// os.Root refuses to follow a link that leaves the root.
			info, err = fs.Stat(fsys, p)
			if err == nil && info.IsDir() {
				return fmt.Errorf("symlink %q leads to a folder; bundles hold only files and folders", p)
			}
		}
		if err != nil {
			return fmt.Errorf("follow %q: %w", p, err)
		}
		if info == nil || !info.Mode().IsRegular() {
			return fmt.Errorf("%q is not a regular file or folder", p)
		}
		srcs = append(srcs, bundleSource{name: p, exec: info.Mode()&0o111 != 0})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(srcs, func(a, b bundleSource) int { return strings.Compare(a.name, b.name) })
	return srcs, nil
}

func (s bundleSource) perm() fs.FileMode {
	if s.dir || s.exec {
		return 0o755
	}
	return 0o644
}

func writeBundleTarGz(fsys fs.FS, srcs []bundleSource, w io.Writer) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, s := range srcs {
		hdr := &tar.Header{Name: s.name, Mode: int64(s.perm()), ModTime: time.Unix(0, 0), Typeflag: tar.TypeDir}
		if s.dir {
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("add %q: %w", s.name, err)
			}
			continue
		}
		hdr.Typeflag = tar.TypeReg
		err := copyBundleSource(fsys, s.name, func(size int64) (io.Writer, error) {
			hdr.Size = size
			return tw, tw.WriteHeader(hdr)
		})
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func writeBundleZip(fsys fs.FS, srcs []bundleSource, w io.Writer) error {
	zw := zip.NewWriter(w)
	for _, s := range srcs {
		fh := &zip.FileHeader{Name: s.name, Method: zip.Deflate, Modified: zipEpoch}
		if s.dir {
			fh.Method = zip.Store
			fh.SetMode(fs.ModeDir | s.perm())
			if _, err := zw.CreateHeader(fh); err != nil {
				return fmt.Errorf("add %q: %w", s.name, err)
			}
			continue
		}
		fh.SetMode(s.perm())
		err := copyBundleSource(fsys, s.name, func(int64) (io.Writer, error) {
			return zw.CreateHeader(fh)
		})
		if err != nil {
			return err
		}
	}
	return zw.Close()
}

// copyBundleSource copies the file p to the writer that start returns once it
// knows the file's size, checking the size did not change meanwhile.
func copyBundleSource(fsys fs.FS, p string, start func(size int64) (io.Writer, error)) error {
	f, err := fsys.Open(p)
	if err != nil {
		return fmt.Errorf("add %q: %w", p, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("add %q: %w", p, err)
	}
	w, err := start(info.Size())
	if err != nil {
		return fmt.Errorf("add %q: %w", p, err)
	}
	n, err := io.Copy(w, io.LimitReader(f, info.Size()+1))
	if err != nil {
		return fmt.Errorf("add %q: %w", p, err)
	}
	if n != info.Size() {
		return fmt.Errorf("add %q: file changed size while being read", p)
	}
	return nil
}
