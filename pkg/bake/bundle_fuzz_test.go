package bake

import (
	"bytes"
	"errors"
	"io/fs"
	"testing"
	"testing/fstest"
)

// FuzzOpenBundle feeds OpenBundle arbitrary bytes as a tar.gz or a zip. No
// input may panic, be refused with an unclassified error, or yield a tree
// that breaks the limits, holds an unsafe path, or lets a link lead out.
func FuzzOpenBundle(f *testing.F) {
	valid := []tarEntry{
		tarDir("r/"),
		tarFile("r/web.pkr.hcl", "build {}\n"),
		tarFile("r/scripts/setup.sh", "#!/bin/sh\necho hi\n"),
		tarSymlink("r/setup.sh", "scripts/setup.sh"),
		tarSymlink("r/scripts/up", ".."),
		tarHardlink("r/copy.sh", "r/scripts/setup.sh"),
	}
	tgz := makeTarGz(f, valid...)
	zipped := makeZip(f,
		zipEntry{name: "r/", mode: fs.ModeDir | 0o755},
		zipEntry{name: "r/web.pkr.hcl", body: "build {}\n"},
		zipEntry{name: "r/scripts/setup.sh", body: "#!/bin/sh\n", mode: 0o755},
		zipEntry{name: "r/run.sh", mode: fs.ModeSymlink | 0o777, body: "scripts/setup.sh"},
	)
	seeds := [][]byte{
		tgz, tgz[:len(tgz)/2], tgz[:10],
		zipped, zipped[:len(zipped)/2], zipped[len(zipped)/2:],
		makeTarGz(f, tarFile("../evil", "x")),
		makeTarGz(f, tarSymlink("a", "b"), tarSymlink("b", "a")),
		makeTarGz(f, tarSymlink("d", "."), tarSymlink("e", "d/..")),
		makeZip(f, zipEntry{name: "a", body: "1"}, zipEntry{name: "a", body: "2"}),
		makeZip(f),
		nil,
	}
	for _, w := range []string{BundleTarGz, BundleZip} {
		var buf bytes.Buffer
		if err := WriteBundle("testdata/bundle/recipe", &buf, w); err != nil {
			f.Fatalf("WriteBundle(%q) = %v", w, err)
		}
		seeds = append(seeds, buf.Bytes())
	}
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}

	limits := BundleLimits{MaxCompressedSize: 1 << 20, MaxTotalSize: 2 << 20, MaxEntries: 64, MaxFileSize: 512 << 10, MaxRatio: 100}
	f.Fuzz(func(t *testing.T, data []byte, zipName bool) {
		name := "fuzz.tar.gz"
		if zipName {
			name = "fuzz.zip"
		}
		fsys, err := OpenBundle(bytes.NewReader(data), int64(len(data)), name, limits)
		if err != nil {
			if !errors.Is(err, ErrBundleLimit) && !errors.Is(err, ErrInvalidBundle) && !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("OpenBundle = %v; want an error matching ErrBundleLimit, ErrInvalidBundle or ErrUnsafePath", err)
			}
			return
		}
		checkBundleTree(t, fsys, limits, int64(len(data)))
	})
}

// checkBundleTree walks an opened bundle and checks it keeps every promise
// OpenBundle makes.
func checkBundleTree(t *testing.T, fsys fs.FS, limits BundleLimits, size int64) {
	t.Helper()
	budget := min(limits.MaxTotalSize, max(limits.MaxRatio*size, ratioFloor))
	var nodes int
	var present []string
	dangling := false
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		nodes++
		if _, err := ResolvePath(p); err != nil || !fs.ValidPath(p) {
			t.Errorf("bundle holds unsafe path %q: %v", p, err)
		}
		present = append(present, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := fs.ReadLink(fsys, p)
			if err != nil {
				t.Errorf("ReadLink(%q) = %v", p, err)
			}
			if _, err := fs.Stat(fsys, p); err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Stat(%q -> %q) = %v; want success or fs.ErrNotExist", p, target, err)
				}
				dangling = true
			}
		case d.Type().IsRegular():
			b, err := fs.ReadFile(fsys, p)
			if err != nil {
				t.Errorf("ReadFile(%q) = %v", p, err)
			}
			if int64(len(b)) > limits.MaxFileSize {
				t.Errorf("file %q is %d bytes, over MaxFileSize %d", p, len(b), limits.MaxFileSize)
			}
		case !d.IsDir():
			t.Errorf("bundle holds %q of type %v", p, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("WalkDir = %v", err)
	}
	if nodes > limits.MaxEntries {
		t.Errorf("bundle has %d files, folders and links, over MaxEntries %d", nodes, limits.MaxEntries)
	}
	if held := heldBytes(fsys.(*memFS).root, map[*byte]bool{}); held > budget {
		t.Errorf("bundle holds %d bytes of content, over the budget %d", held, budget)
	}
	if !dangling && len(present) > 0 {
		if err := fstest.TestFS(fsys, present[0]); err != nil {
			t.Errorf("fstest.TestFS = %v", err)
		}
	}
}

// heldBytes sums the content a memFS holds, counting content that hard
// links share once.
func heldBytes(n *memNode, seen map[*byte]bool) int64 {
	var sum int64
	if len(n.data) > 0 && !seen[&n.data[0]] {
		seen[&n.data[0]] = true
		sum += int64(len(n.data))
	}
	for _, c := range n.children {
		sum += heldBytes(c, seen)
	}
	return sum
}
