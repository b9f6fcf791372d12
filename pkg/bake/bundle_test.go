package bake

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// tarEntry is one entry for makeTarGz: a header and, for regular files,
// the body (hdr.Size is set from it unless already set).
type tarEntry struct {
	hdr  tar.Header
	body string
}

func tarFile(name, body string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, body: body}
}

func tarDir(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

func tarSymlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}

func tarHardlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target, Mode: 0o644}}
}

// makeTarGz builds a .tar.gz from entries, trusting the caller about names,
// types and links: tar.Writer does not check them, which is what lets a
// test write a malicious archive.
func makeTarGz(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := e.hdr
		if hdr.Typeflag == tar.TypeReg && hdr.Size == 0 {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatalf("tar WriteHeader(%q): %v", hdr.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatalf("tar Write(%q): %v", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("tar Close: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("gzip Close: %v", err)
	}
	return buf.Bytes()
}

// zipEntry is one entry for makeZip.
type zipEntry struct {
	name  string
	mode  fs.FileMode
	body  string
	flags uint16
}

func makeZip(t testing.TB, entries ...zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		fh := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Flags: e.flags}
		fh.SetMode(zipModeOr(e.mode, 0o644))
		w, err := zw.CreateHeader(fh)
		if err != nil {
			t.Fatalf("zip CreateHeader(%q): %v", e.name, err)
		}
		if _, err := io.WriteString(w, e.body); err != nil {
			t.Fatalf("zip Write(%q): %v", e.name, err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("zip Close: %v", err)
	}
	return buf.Bytes()
}

func zipModeOr(m, def fs.FileMode) fs.FileMode {
	if m == 0 {
		return def
	}
	return m
}

func openBundleBytes(data []byte, name string, limits BundleLimits) (fs.FS, error) {
	return OpenBundle(bytes.NewReader(data), int64(len(data)), name, limits)
}

// bundleFiles returns every file in fsys, links to files included, with its
// content; folders reached through links are not entered.
func bundleFiles(t *testing.T, fsys fs.FS) map[string]string {
	t.Helper()
	files, err := ListFiles(fsys, ".")
	if err != nil {
		t.Fatalf("ListFiles(.) = %v", err)
	}
	got := map[string]string{}
	for _, p := range files {
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			t.Fatalf("ReadFile(%q) = %v", p, err)
		}
		got[p] = string(b)
	}
	return got
}

func TestOpenBundleAccepts(t *testing.T) {
	tests := []struct {
		name string
		file string
		data func(t *testing.T) []byte
		want map[string]string
		// present are paths fstest.TestFS must find.
		present []string
	}{
		{
			name: "tar.gz with folders, links and a hard link",
			file: "r.tar.gz",
			data: func(t *testing.T) []byte {
				return makeTarGz(t,
					tarDir("scripts/"),
					tarFile("scripts/setup.sh", "#!/bin/sh\n"),
					tarFile("web.pkr.hcl", "build {}\n"),
					tarSymlink("setup.sh", "scripts/setup.sh"),
					tarSymlink("scripts/self", "../scripts"),
					tarSymlink("scripts/up", ".."),
					tarHardlink("copy.sh", "scripts/setup.sh"),
				)
			},
			want: map[string]string{
				"copy.sh":          "#!/bin/sh\n",
				"scripts/setup.sh": "#!/bin/sh\n",
				"setup.sh":         "#!/bin/sh\n",
				"web.pkr.hcl":      "build {}\n",
			},
			present: []string{"scripts/setup.sh", "setup.sh", "copy.sh", "scripts/self", "scripts/up"},
		},
		{
			name: "tar.gz made with tar -C dir .",
			file: "r.tgz",
			data: func(t *testing.T) []byte {
				return makeTarGz(t, tarDir("./"), tarFile("./a.pkr.hcl", "a"), tarDir("./files/"), tarFile("./files/x", "x"))
			},
			want:    map[string]string{"a.pkr.hcl": "a", "files/x": "x"},
			present: []string{"a.pkr.hcl", "files/x"},
		},
		{
			name: "tar.gz with one wrapper folder is unwrapped",
			file: "r.tar.gz",
			data: func(t *testing.T) []byte {
				return makeTarGz(t,
					tarDir("myrecipe/"),
					tarFile("myrecipe/web.pkr.hcl", "w"),
					tarFile("myrecipe/scripts/a.sh", "a"),
					tarHardlink("myrecipe/b.sh", "myrecipe/scripts/a.sh"),
				)
			},
			want:    map[string]string{"web.pkr.hcl": "w", "scripts/a.sh": "a", "b.sh": "a"},
			present: []string{"web.pkr.hcl", "scripts/a.sh"},
		},
		{
			name: "tar.gz with two top folders is not unwrapped",
			file: "r.tar.gz",
			data: func(t *testing.T) []byte {
				return makeTarGz(t, tarFile("a/x", "x"), tarFile("b/y", "y"))
			},
			want:    map[string]string{"a/x": "x", "b/y": "y"},
			present: []string{"a/x", "b/y"},
		},
		{
			name: "tar.gz with one top file is not unwrapped",
			file: "r.tar.gz",
			data: func(t *testing.T) []byte {
				return makeTarGz(t, tarFile("web.pkr.hcl", "w"))
			},
			want:    map[string]string{"web.pkr.hcl": "w"},
			present: []string{"web.pkr.hcl"},
		},
		{
			name: "zip from Finder with __MACOSX",
			file: "r.zip",
			data: func(t *testing.T) []byte {
				return makeZip(t,
					zipEntry{name: "myrecipe/", mode: fs.ModeDir | 0o755},
					zipEntry{name: "myrecipe/web.pkr.hcl", body: "w"},
					zipEntry{name: "myrecipe/scripts/setup.sh", body: "s", mode: 0o755},
					zipEntry{name: "myrecipe/run.sh", mode: fs.ModeSymlink | 0o777, body: "scripts/setup.sh"},
					zipEntry{name: "__MACOSX/myrecipe/._web.pkr.hcl", body: "junk"},
				)
			},
			want:    map[string]string{"web.pkr.hcl": "w", "scripts/setup.sh": "s", "run.sh": "s"},
			present: []string{"web.pkr.hcl", "scripts/setup.sh", "run.sh"},
		},
		{
			name: "zip detected by magic whatever its name",
			file: "recipe.tar.gz",
			data: func(t *testing.T) []byte {
				return makeZip(t, zipEntry{name: "a.pkr.hcl", body: "a"})
			},
			want:    map[string]string{"a.pkr.hcl": "a"},
			present: []string{"a.pkr.hcl"},
		},
		{
			name: "empty zip",
			file: "r.zip",
			data: func(t *testing.T) []byte { return makeZip(t) },
			want: map[string]string{},
		},
		{
			name: "zip with a prefix, hinted by its name",
			file: "r.zip",
			data: func(t *testing.T) []byte {
				return append([]byte("#!/bin/sh\nexit 0\n"), makeZip(t, zipEntry{name: "a", body: "a"})...)
			},
			want:    map[string]string{"a": "a"},
			present: []string{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys, err := openBundleBytes(tt.data(t), tt.file, BundleLimits{})
			if err != nil {
				t.Fatalf("OpenBundle(%q) = %v", tt.file, err)
			}
			if diff := cmp.Diff(tt.want, bundleFiles(t, fsys)); diff != "" {
				t.Errorf("OpenBundle(%q) files (-want +got):\n%s", tt.file, diff)
			}
			if tt.present != nil {
				if err := fstest.TestFS(fsys, tt.present...); err != nil {
					t.Errorf("fstest.TestFS(OpenBundle(%q)) = %v", tt.file, err)
				}
			}
		})
	}
}

func TestOpenBundleRejects(t *testing.T) {
	small := BundleLimits{MaxEntries: 3, MaxFileSize: 10, MaxTotalSize: 15}
	tests := []struct {
		name    string
		file    string
		data    func(t *testing.T) []byte
		limits  BundleLimits
		wantErr error
		// wantMsg must appear in the error: usually the entry's name.
		wantMsg string
	}{
		{"dotdot", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("../evil", "x")) }, BundleLimits{}, ErrUnsafePath, `"../evil"`},
		{"dotdot inside", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("a/../../evil", "x")) }, BundleLimits{}, ErrUnsafePath, `"a/../../evil"`},
		{"dotdot that stays inside", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("a/../b", "x")) }, BundleLimits{}, ErrUnsafePath, `"a/../b"`},
		{"absolute", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("/etc/passwd", "x")) }, BundleLimits{}, ErrUnsafePath, `"/etc/passwd"`},
		{"zip absolute", "r.zip", func(t *testing.T) []byte { return makeZip(t, zipEntry{name: "/etc/cron.d/x", body: "x"}) }, BundleLimits{}, ErrUnsafePath, `"/etc/cron.d/x"`},
		{"zip backslash dotdot", "r.zip", func(t *testing.T) []byte { return makeZip(t, zipEntry{name: `..\evil`, body: "x"}) }, BundleLimits{}, ErrUnsafePath, "backslash"},
		{"zip drive letter", "r.zip", func(t *testing.T) []byte { return makeZip(t, zipEntry{name: "C:/Windows/x", body: "x"}) }, BundleLimits{}, ErrUnsafePath, `"C:/Windows/x"`},
		{"zip NUL", "r.zip", func(t *testing.T) []byte { return makeZip(t, zipEntry{name: "a.sh\x00.txt", body: "x"}) }, BundleLimits{}, ErrUnsafePath, "NUL"},
		{"zip empty name", "r.zip", func(t *testing.T) []byte { return makeZip(t, zipEntry{name: "", body: "x"}) }, BundleLimits{}, ErrUnsafePath, "empty"},
		{"symlink to /etc", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarSymlink("etc", "/etc")) }, BundleLimits{}, ErrUnsafePath, `"etc"`},
		{"symlink up and out", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarSymlink("a", "../../x")) }, BundleLimits{}, ErrUnsafePath, `"a"`},
		{"nested symlink up and out", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarSymlink("sub/a", "../../x")) }, BundleLimits{}, ErrUnsafePath, `"sub/a"`},
		{"symlink out through another link", "r.tar.gz", func(t *testing.T) []byte {
			// "e" looks harmless by its spelling, but d is the root itself.
			return makeTarGz(t, tarSymlink("d", "."), tarSymlink("e", "d/.."))
		}, BundleLimits{}, ErrUnsafePath, `"e"`},
		{"symlink out after unwrapping", "r.tar.gz", func(t *testing.T) []byte {
			return makeTarGz(t, tarFile("top/a", "a"), tarSymlink("top/b", "../top/a"))
		}, BundleLimits{}, ErrUnsafePath, `"b"`},
		{"zip symlink to /etc", "r.zip", func(t *testing.T) []byte {
			return makeZip(t, zipEntry{name: "etc", mode: fs.ModeSymlink | 0o777, body: "/etc"})
		}, BundleLimits{}, ErrUnsafePath, `"etc"`},
		{"zip symlink out", "r.zip", func(t *testing.T) []byte {
			return makeZip(t, zipEntry{name: "x/y", mode: fs.ModeSymlink | 0o777, body: "../../.ssh"})
		}, BundleLimits{}, ErrUnsafePath, `"x/y"`},
		{"write through a symlink", "r.tar.gz", func(t *testing.T) []byte {
			return makeTarGz(t, tarDir("sub/"), tarSymlink("link", "sub"), tarFile("link/evil", "x"))
		}, BundleLimits{}, ErrUnsafePath, `"link/evil"`},
		{"hard link out", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarHardlink("h", "../../etc/passwd")) }, BundleLimits{}, ErrUnsafePath, `"h"`},
		{"hard link absolute", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarHardlink("h", "/etc/shadow")) }, BundleLimits{}, ErrUnsafePath, `"h"`},
		{"hard link to nothing", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarHardlink("h", "nothing")) }, BundleLimits{}, ErrInvalidBundle, `"h"`},
		{"hard link to a folder", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarDir("d/"), tarHardlink("h", "d")) }, BundleLimits{}, ErrInvalidBundle, `"h"`},
		{"symlink loop", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarSymlink("a", "b"), tarSymlink("b", "a")) }, BundleLimits{}, ErrInvalidBundle, "loop"},
		{"symlink to itself", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarSymlink("a", "a/x")) }, BundleLimits{}, ErrInvalidBundle, "loop"},
		{"symlink chain of 41", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, linkChain(41)...) }, BundleLimits{}, ErrInvalidBundle, "more than 40"},
		{"duplicate file", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("a.sh", "good"), tarFile("a.sh", "evil")) }, BundleLimits{}, ErrInvalidBundle, "duplicate"},
		{"duplicate after cleaning", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("a.sh", "good"), tarFile("./a.sh", "evil")) }, BundleLimits{}, ErrInvalidBundle, "duplicate"},
		{"duplicate folder", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("x", ""), tarDir("d/"), tarDir("d/")) }, BundleLimits{}, ErrInvalidBundle, "duplicate"},
		{"zip duplicate", "r.zip", func(t *testing.T) []byte {
			return makeZip(t, zipEntry{name: "a", body: "1"}, zipEntry{name: "a", body: "2"})
		}, BundleLimits{}, ErrInvalidBundle, "duplicate"},
		{"file where a folder is", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("a/b", "x"), tarFile("a", "y")) }, BundleLimits{}, ErrInvalidBundle, `"a"`},
		{"folder where a file is", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("a", "y"), tarFile("a/b", "x")) }, BundleLimits{}, ErrInvalidBundle, `"a/b"`},
		{"fifo", "r.tar.gz", func(t *testing.T) []byte {
			return makeTarGz(t, tarEntry{hdr: tar.Header{Name: "pipe", Typeflag: tar.TypeFifo, Mode: 0o644}})
		}, BundleLimits{}, ErrInvalidBundle, `"pipe"`},
		{"char device", "r.tar.gz", func(t *testing.T) []byte {
			return makeTarGz(t, tarEntry{hdr: tar.Header{Name: "zero", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 5}})
		}, BundleLimits{}, ErrInvalidBundle, `"zero"`},
		{"block device", "r.tar.gz", func(t *testing.T) []byte {
			return makeTarGz(t, tarEntry{hdr: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8}})
		}, BundleLimits{}, ErrInvalidBundle, `"sda"`},
		{"zip fifo", "r.zip", func(t *testing.T) []byte { return makeZip(t, zipEntry{name: "pipe", mode: fs.ModeNamedPipe | 0o644}) }, BundleLimits{}, ErrInvalidBundle, `"pipe"`},
		{"zip encrypted", "r.zip", func(t *testing.T) []byte { return makeZip(t, zipEntry{name: "secret", body: "x", flags: 0x1}) }, BundleLimits{}, ErrInvalidBundle, "encrypted"},
		{"sparse file", "r.tar.gz", func(t *testing.T) []byte { return sparseTar(t) }, BundleLimits{}, ErrInvalidBundle, "sparse"},
		{"too many entries", "r.tar.gz", func(t *testing.T) []byte {
			return makeTarGz(t, tarFile("a", ""), tarFile("b", ""), tarFile("c", ""), tarFile("d", ""))
		}, small, ErrBundleLimit, "more than 3 entries"},
		{"too many entries by default", "r.tar.gz", func(t *testing.T) []byte {
			var es []tarEntry
			for i := range 10_001 {
				es = append(es, tarFile(fmt.Sprintf("f%05d", i), ""))
			}
			return makeTarGz(t, es...)
		}, BundleLimits{}, ErrBundleLimit, "more than 10000"},
		{"zip too many entries", "r.zip", func(t *testing.T) []byte {
			return makeZip(t, zipEntry{name: "a"}, zipEntry{name: "b"}, zipEntry{name: "c"}, zipEntry{name: "d"})
		}, small, ErrBundleLimit, "more than 3 entries"},
		{"too many implied folders", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("a/b/c/d/e", "")) }, small, ErrBundleLimit, "more than 3 files, folders and links"},
		{"file over the limit", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("big", strings.Repeat("x", 11))) }, small, ErrBundleLimit, `"big"`},
		{"zip file over the limit", "r.zip", func(t *testing.T) []byte { return makeZip(t, zipEntry{name: "big", body: strings.Repeat("x", 11)}) }, small, ErrBundleLimit, `"big"`},
		{"total over the limit", "r.tar.gz", func(t *testing.T) []byte {
			return makeTarGz(t, tarFile("a", "0123456789"), tarFile("b", "0123456789"))
		}, small, ErrBundleLimit, "over the 15 bytes limit"},
		{"zip total over the limit", "r.zip", func(t *testing.T) []byte {
			return makeZip(t, zipEntry{name: "a", body: "0123456789"}, zipEntry{name: "b", body: "0123456789"})
		}, small, ErrBundleLimit, "over the 15 bytes limit"},
		{"compressed size over the limit", "r.tar.gz", func(t *testing.T) []byte { return makeTarGz(t, tarFile("a", "a")) }, BundleLimits{MaxCompressedSize: 10}, ErrBundleLimit, "over the 10 bytes limit"},
		{"not an archive", "r.tar.gz", func(t *testing.T) []byte { return []byte("build {}\n") }, BundleLimits{}, ErrInvalidBundle, "not a gzip-compressed tar"},
		{"plain tar", "r.tar", func(t *testing.T) []byte {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			tw.Close()
			return buf.Bytes()
		}, BundleLimits{}, ErrInvalidBundle, "not a gzip-compressed tar"},
		{"empty input", "r.tar.gz", func(t *testing.T) []byte { return nil }, BundleLimits{}, ErrInvalidBundle, "not a gzip"},
		{"gzip but not tar", "r.tar.gz", func(t *testing.T) []byte { return gzipForTest(t, []byte("hello, world")) }, BundleLimits{}, ErrInvalidBundle, "unexpected EOF"},
		{"truncated tar.gz", "r.tar.gz", func(t *testing.T) []byte {
			b := makeTarGz(t, tarFile("a", strings.Repeat("abc", 1000)))
			return b[:len(b)/2]
		}, BundleLimits{}, ErrInvalidBundle, "unexpected EOF"},
		{"tar.gz with a bad checksum", "r.tar.gz", func(t *testing.T) []byte {
			b := makeTarGz(t, tarFile("a", "abc"))
			b[len(b)-6] ^= 0xff // inside the gzip trailer's CRC-32
			return b
		}, BundleLimits{}, ErrInvalidBundle, "checksum"},
		{"truncated zip", "r.zip", func(t *testing.T) []byte {
			b := makeZip(t, zipEntry{name: "a", body: "abc"})
			return b[:len(b)-10]
		}, BundleLimits{}, ErrInvalidBundle, "zip"},
		{"zip with a bad CRC", "r.zip", func(t *testing.T) []byte {
			return makeRawZip(t, rawZipEntry{name: "a", method: zip.Store, raw: []byte("abc"), size: 3, crc: 1})
		}, BundleLimits{}, ErrInvalidBundle, `"a"`},
		{"tar file whose header says 10 bytes, followed by more", "r.tar.gz", func(t *testing.T) []byte {
			var buf bytes.Buffer
			buf.Write(rawTarHeader("small.txt", '0', 10))
			buf.Write(bytes.Repeat([]byte("A"), 64<<10))
			return gzipForTest(t, buf.Bytes())
		}, BundleLimits{}, ErrInvalidBundle, "invalid tar header"},
		{"data hidden after the tar", "r.tar.gz", func(t *testing.T) []byte {
			var tarBuf bytes.Buffer
			tw := tar.NewWriter(&tarBuf)
			tw.Close()
			// Incompressible, so the ratio does not stop it first.
			hidden := make([]byte, 2<<20)
			rand.NewChaCha8([32]byte{}).Read(hidden)
			tarBuf.Write(hidden)
			return gzipForTest(t, tarBuf.Bytes())
		}, BundleLimits{}, ErrInvalidBundle, "after the end of the tar"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys, err := openBundleBytes(tt.data(t), tt.file, tt.limits)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("OpenBundle(%q) = %v, %v; want error %v", tt.file, fsys, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), tt.file) {
				t.Errorf("OpenBundle(%q) = %q; want a message naming the bundle and containing %q", tt.file, err, tt.wantMsg)
			}
		})
	}
}

// linkChain returns n symlinks l1 -> l2 -> ... -> ln -> target, and target.
func linkChain(n int) []tarEntry {
	es := []tarEntry{tarFile("target", "t")}
	for i := 1; i <= n; i++ {
		next := "target"
		if i < n {
			next = "l" + strings.Repeat("x", i+1)
		}
		es = append(es, tarSymlink("l"+strings.Repeat("x", i), next))
	}
	return es
}

func gzipForTest(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatalf("gzip Close: %v", err)
	}
	return buf.Bytes()
}

// sparseTar hand-writes a GNU 0.1 sparse file in PAX records, since
// tar.Writer drops them: 512 bytes stored, 1 TiB when archive/tar makes up
// the holes' zeros.
func sparseTar(t *testing.T) []byte {
	t.Helper()
	var pax bytes.Buffer
	for _, kv := range [][2]string{
		{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"}, {"GNU.sparse.name", "holes"},
		{"GNU.sparse.realsize", "1099511627776"}, {"GNU.sparse.numblocks", "1"}, {"GNU.sparse.map", "0,512"},
	} {
		pax.WriteString(paxRecord(kv[0], kv[1]))
	}
	var out bytes.Buffer
	out.Write(rawTarHeader("PaxHeaders/holes", 'x', int64(pax.Len())))
	out.Write(padBlock(pax.Bytes()))
	out.Write(rawTarHeader("holes", '0', 512))
	out.Write(make([]byte, 512+1024))
	return gzipForTest(t, out.Bytes())
}

// paxRecord formats one PAX record, whose length counts its own digits.
func paxRecord(k, v string) string {
	rest := " " + k + "=" + v + "\n"
	n := len(rest) + 1
	for len(strconv.Itoa(n))+len(rest) != n {
		n++
	}
	return strconv.Itoa(n) + rest
}

// rawTarHeader writes a ustar header block by hand.
func rawTarHeader(name string, flag byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], "00000000000\x00")
	b[156] = flag
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func padBlock(b []byte) []byte {
	return append(b, make([]byte, (512-len(b)%512)%512)...)
}

// rawZipEntry is one entry for makeRawZip, whose header can lie.
type rawZipEntry struct {
	name   string
	method uint16
	raw    []byte // already compressed
	size   uint64 // claimed uncompressed size
	crc    uint32
}

func makeRawZip(t testing.TB, entries ...rawZipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		fh := &zip.FileHeader{Name: e.name, Method: e.method, CRC32: e.crc, CompressedSize64: uint64(len(e.raw)), UncompressedSize64: e.size}
		fh.SetMode(0o644)
		w, err := zw.CreateRaw(fh)
		if err != nil {
			t.Fatalf("zip CreateRaw(%q): %v", e.name, err)
		}
		w.Write(e.raw)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("zip Close: %v", err)
	}
	return buf.Bytes()
}

// zeroReader is an endless source of zero bytes, so a bomb can be compressed
// without holding what it inflates to.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

const bombChunk = 32 << 20 // under the 64 MiB file limit, so only the ratio stops a bomb

var (
	bombOnce    sync.Once
	bombDeflate []byte // raw deflate of bombChunk zero bytes
	bombGzip    []byte // the same as one gzip member
	bombCRC     uint32
)

// bombParts compresses bombChunk zero bytes once, streaming: about 32 KiB.
func bombParts(t testing.TB) ([]byte, []byte, uint32) {
	t.Helper()
	bombOnce.Do(func() {
		var d bytes.Buffer
		fw, _ := flate.NewWriter(&d, flate.BestCompression)
		io.CopyN(fw, zeroReader{}, bombChunk)
		fw.Close()
		bombDeflate = d.Bytes()

		var g bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&g, gzip.BestCompression)
		io.CopyN(zw, zeroReader{}, bombChunk)
		zw.Close()
		bombGzip = g.Bytes()

		h := crc32.NewIEEE()
		io.CopyN(h, zeroReader{}, bombChunk)
		bombCRC = h.Sum32()
	})
	return bombDeflate, bombGzip, bombCRC
}

// gzipBomb returns a .tar.gz of n files of bombChunk zeros each, about
// 32 KiB per file. gzip allows members to be concatenated, so the zeros'
// member is compressed once and repeated.
func gzipBomb(t testing.TB, n int) []byte {
	t.Helper()
	_, member, _ := bombParts(t)
	var out bytes.Buffer
	for i := range n {
		var hdr bytes.Buffer
		tw := tar.NewWriter(&hdr)
		if err := tw.WriteHeader(&tar.Header{Name: "zeros-" + strconv.Itoa(i), Typeflag: tar.TypeReg, Mode: 0o644, Size: bombChunk}); err != nil {
			t.Fatalf("tar WriteHeader: %v", err)
		}
		out.Write(gzipForTest(t, hdr.Bytes()))
		out.Write(member)
	}
	out.Write(gzipForTest(t, make([]byte, 1024)))
	return out.Bytes()
}

func TestOpenBundleBombs(t *testing.T) {
	if testing.Short() {
		t.Skip("compresses a few hundred MiB of zeros")
	}
	deflated, _, crc := bombParts(t)
	tests := []struct {
		name    string
		file    string
		data    func(t *testing.T) []byte
		wantErr error
		wantMsg string
	}{
		{
			name:    "gzip bomb of 1 GiB",
			file:    "bomb.tar.gz",
			data:    func(t *testing.T) []byte { return gzipBomb(t, 32) },
			wantErr: ErrBundleLimit,
			wantMsg: "expands more than 100 times",
		},
		{
			name: "zip bomb of 1 GiB",
			file: "bomb.zip",
			data: func(t *testing.T) []byte {
				var es []rawZipEntry
				for i := range 32 {
					es = append(es, rawZipEntry{name: "zeros-" + strconv.Itoa(i), method: zip.Deflate, raw: deflated, size: bombChunk, crc: crc})
				}
				return makeRawZip(t, es...)
			},
			wantErr: ErrBundleLimit,
			wantMsg: "expands more than 100 times",
		},
		{
			name: "zip bomb with overlapping entries",
			file: "bomb.zip",
			data: func(t *testing.T) []byte {
				// Every central directory entry points at the same data.
				b := makeRawZip(t, rawZipEntry{name: "a", method: zip.Deflate, raw: deflated, size: bombChunk, crc: crc})
				return overlapZip(t, b, 32)
			},
			wantErr: ErrBundleLimit,
			wantMsg: "expands more than 100 times",
		},
		{
			name: "zip file whose header says 1 KiB but holds 32 MiB",
			file: "liar.zip",
			data: func(t *testing.T) []byte {
				return makeRawZip(t, rawZipEntry{name: "small.txt", method: zip.Deflate, raw: deflated, size: 1 << 10, crc: crc})
			},
			wantErr: ErrInvalidBundle,
			wantMsg: `"small.txt"`,
		},
		{
			name: "tar file whose header says 10 bytes, followed by 1 GiB of zeros",
			file: "liar.tar.gz",
			data: func(t *testing.T) []byte {
				_, member, _ := bombParts(t)
				var hdr bytes.Buffer
				tw := tar.NewWriter(&hdr)
				tw.WriteHeader(&tar.Header{Name: "small.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 10})
				tw.Write([]byte("0123456789"))
				tw.Flush()
				out := gzipForTest(t, hdr.Bytes())
				for range 32 {
					out = append(out, member...)
				}
				return out
			},
			wantErr: ErrInvalidBundle,
			wantMsg: "after the end of the tar archive",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.data(t)
			start := time.Now()
			_, err := openBundleBytes(data, tt.file, BundleLimits{})
			elapsed := time.Since(start)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("OpenBundle(%q, %d bytes) = %v; want %v containing %q", tt.file, len(data), err, tt.wantErr, tt.wantMsg)
			}
			// Inflating the whole GiB would take several seconds; stopping at
			// the ratio (100 MiB here) takes well under one.
			if elapsed > 5*time.Second {
				t.Errorf("OpenBundle(%q) took %v to refuse a bomb", tt.file, elapsed)
			}
			t.Logf("OpenBundle(%q, %d bytes) refused in %v: %v", tt.file, len(data), elapsed, err)
		})
	}
}

// overlapZip rewrites a one-entry zip so its central directory lists the
// entry n times under different names, all pointing at the same data.
func overlapZip(t *testing.T, b []byte, n int) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("zip.NewReader: %v", err)
	}
	off, err := zr.File[0].DataOffset()
	if err != nil {
		t.Fatalf("DataOffset: %v", err)
	}
	// The local header is at 0; the central directory starts after the data.
	cdStart := off + int64(zr.File[0].CompressedSize64)
	eocd := bytes.LastIndex(b, []byte("PK\x05\x06"))
	cd := b[cdStart:eocd]
	var out bytes.Buffer
	out.Write(b[:cdStart])
	for i := range n {
		e := bytes.Clone(cd)
		e[46] = byte('a' + i%26) // the one-byte name
		out.Write(e)
	}
	end := bytes.Clone(b[eocd:])
	put16 := func(at int, v int) { end[at], end[at+1] = byte(v), byte(v>>8) }
	put32 := func(at int, v int) { put16(at, v&0xffff); put16(at+2, v>>16) }
	put16(8, n)
	put16(10, n)
	put32(12, n*len(cd))
	put32(16, int(cdStart))
	out.Write(end)
	return out.Bytes()
}

func TestBundleLinks(t *testing.T) {
	fsys, err := openBundleBytes(makeTarGz(t,
		tarFile("dir/sub/f", "f"),
		tarSymlink("l1", "dir/sub"),
		tarSymlink("dir/up", ".."),
		tarSymlink("a", "b"),
		tarSymlink("b", "dir/sub/f"),
		tarSymlink("gone", "nowhere"),
		tarSymlink("through", "l1/f"),
	), "links.tar.gz", BundleLimits{})
	if err != nil {
		t.Fatalf("OpenBundle = %v", err)
	}
	reads := map[string]string{
		"l1/f":               "f",
		"dir/up/dir/sub/f":   "f",
		"dir/up/l1/f":        "f",
		"a":                  "f",
		"through":            "f",
		"dir/up/dir/up/a":    "f",
		"l1/../../dir/sub/f": "", // not a valid fs.FS path
	}
	for p, want := range reads {
		got, err := fs.ReadFile(fsys, p)
		if want == "" {
			if err == nil {
				t.Errorf("ReadFile(%q) = %q, want an error", p, got)
			}
			continue
		}
		if err != nil || string(got) != want {
			t.Errorf("ReadFile(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
	if _, err := fs.ReadFile(fsys, "gone"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile(gone) = %v, want fs.ErrNotExist", err)
	}
	if got, err := fs.ReadLink(fsys, "dir/up"); err != nil || got != ".." {
		t.Errorf("ReadLink(dir/up) = %q, %v; want ..", got, err)
	}
	if info, err := fs.Lstat(fsys, "l1"); err != nil || info.Mode().Type() != fs.ModeSymlink {
		t.Errorf("Lstat(l1) = %v, %v; want a symlink", info, err)
	}
	if info, err := fs.Stat(fsys, "l1"); err != nil || !info.IsDir() || info.Name() != "l1" {
		t.Errorf("Stat(l1) = %v, %v; want a folder named l1", info, err)
	}
	// A walk does not follow the link cycle dir/up -> ..
	var walked []string
	fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		walked = append(walked, p)
		return err
	})
	want := []string{".", "a", "b", "dir", "dir/sub", "dir/sub/f", "dir/up", "gone", "l1", "through"}
	if diff := cmp.Diff(want, walked); diff != "" {
		t.Errorf("WalkDir(.) (-want +got):\n%s", diff)
	}
	// A chain of exactly 40 links is allowed.
	if _, err := openBundleBytes(makeTarGz(t, linkChain(40)...), "chain.tar.gz", BundleLimits{}); err != nil {
		t.Errorf("OpenBundle(chain of 40) = %v", err)
	}
}

// copyRecipeFixture copies the fixture recipe into a temporary folder, so the test
// can set modes, add links and vary times.
func copyRecipeFixture(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	if err := os.Chmod(filepath.Join(dst, "scripts/setup.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

func writeRecipeFile(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWriteBundleRoundTrip(t *testing.T) {
	src := copyRecipeFixture(t, "testdata/bundle/recipe")
	want := bundleFiles(t, os.DirFS(src))
	// What WriteBundle leaves out, and a link it stores as a file.
	writeRecipeFile(t, filepath.Join(src, ".git/HEAD"), "ref: refs/heads/main\n")
	writeRecipeFile(t, filepath.Join(src, "files/.terraform/x"), "x")
	writeRecipeFile(t, filepath.Join(src, "packer_cache/iso"), "iso")
	writeRecipeFile(t, filepath.Join(src, "old.tar.gz"), "old")
	writeRecipeFile(t, filepath.Join(src, "files/out.ZIP"), "old")
	if err := os.Symlink("scripts/setup.sh", filepath.Join(src, "setup-link.sh")); err != nil {
		t.Fatal(err)
	}
	want["setup-link.sh"] = want["scripts/setup.sh"]

	for _, format := range []string{BundleTarGz, BundleZip} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteBundle(src, &buf, format); err != nil {
				t.Fatalf("WriteBundle(%q, %q) = %v", src, format, err)
			}
			fsys, err := openBundleBytes(buf.Bytes(), "recipe."+format, BundleLimits{})
			if err != nil {
				t.Fatalf("OpenBundle(WriteBundle(%q)) = %v", format, err)
			}
			if diff := cmp.Diff(want, bundleFiles(t, fsys)); diff != "" {
				t.Errorf("OpenBundle(WriteBundle(%q)) files (-want +got):\n%s", format, diff)
			}
			modes := map[string]fs.FileMode{}
			for _, p := range []string{"scripts/setup.sh", "web.pkr.hcl", "setup-link.sh", "files/conf.d"} {
				info, err := fs.Lstat(fsys, p)
				if err != nil {
					t.Fatalf("Lstat(%q) = %v", p, err)
				}
				modes[p] = info.Mode()
			}
			wantModes := map[string]fs.FileMode{
				"scripts/setup.sh": 0o755,
				"web.pkr.hcl":      0o644,
				"setup-link.sh":    0o755, // a regular file now, with its target's mode
				"files/conf.d":     fs.ModeDir | 0o755,
			}
			if diff := cmp.Diff(wantModes, modes); diff != "" {
				t.Errorf("OpenBundle(WriteBundle(%q)) modes (-want +got):\n%s", format, diff)
			}
			if err := fstest.TestFS(fsys, "web.pkr.hcl", "scripts/setup.sh", "ansible/roles/web/tasks/main.yml"); err != nil {
				t.Errorf("fstest.TestFS(OpenBundle(WriteBundle(%q))) = %v", format, err)
			}
		})
	}
}

func TestWriteBundleDeterministic(t *testing.T) {
	a := copyRecipeFixture(t, "testdata/bundle/recipe")
	b := copyRecipeFixture(t, "testdata/bundle/recipe")
	// Different times and an extra skipped folder must not matter.
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	filepath.WalkDir(b, func(p string, d fs.DirEntry, err error) error {
		return os.Chtimes(p, old, old)
	})
	writeRecipeFile(t, filepath.Join(b, ".git/config"), "[core]\n")
	for _, format := range []string{BundleTarGz, BundleZip} {
		t.Run(format, func(t *testing.T) {
			var first, again, other bytes.Buffer
			for _, w := range []struct {
				dir string
				buf *bytes.Buffer
			}{{a, &first}, {a, &again}, {b, &other}} {
				if err := WriteBundle(w.dir, w.buf, format); err != nil {
					t.Fatalf("WriteBundle(%q, %q) = %v", w.dir, format, err)
				}
			}
			if !bytes.Equal(first.Bytes(), again.Bytes()) {
				t.Errorf("WriteBundle(%q) twice gave different bytes", format)
			}
			if !bytes.Equal(first.Bytes(), other.Bytes()) {
				t.Errorf("WriteBundle(%q) of two copies with different times gave different bytes", format)
			}
		})
	}
}

func TestWriteBundleEntriesSortedAndZeroed(t *testing.T) {
	src := copyRecipeFixture(t, "testdata/bundle/recipe")
	var buf bytes.Buffer
	if err := WriteBundle(src, &buf, BundleTarGz); err != nil {
		t.Fatalf("WriteBundle = %v", err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("tar Next = %v", err)
		}
		names = append(names, hdr.Name)
		if !hdr.ModTime.Equal(time.Unix(0, 0)) || hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("entry %q: mtime %v, owner %d:%d %q:%q; want all zero", hdr.Name, hdr.ModTime, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname)
		}
	}
	want := []string{
		"ansible/", "ansible/playbook.yml", "ansible/roles/", "ansible/roles/web/", "ansible/roles/web/tasks/", "ansible/roles/web/tasks/main.yml",
		"files/", "files/app.conf", "files/conf.d/", "files/conf.d/logging.conf",
		"scripts/", "scripts/setup.sh", "variables.pkr.hcl", "web.pkr.hcl",
	}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("WriteBundle entries (-want +got):\n%s", diff)
	}
}

func TestWriteBundleRefuses(t *testing.T) {
	outside := t.TempDir()
	writeRecipeFile(t, filepath.Join(outside, "secret"), "secret")
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		format  string
		wantMsg string
	}{
		{"symlink to a file outside", func(t *testing.T, dir string) {
			os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "secret"))
		}, BundleTarGz, `"secret"`},
		{"relative symlink outside", func(t *testing.T, dir string) {
			os.Symlink("../../"+filepath.Base(outside)+"/secret", filepath.Join(dir, "files/secret"))
		}, BundleZip, `"files/secret"`},
		{"symlink to a folder outside", func(t *testing.T, dir string) {
			os.Symlink(outside, filepath.Join(dir, "out"))
		}, BundleTarGz, `"out"`},
		{"symlink to a folder inside", func(t *testing.T, dir string) {
			os.Symlink("files", filepath.Join(dir, "more"))
		}, BundleTarGz, `"more" leads to a folder`},
		{"dangling symlink", func(t *testing.T, dir string) {
			os.Symlink("nowhere", filepath.Join(dir, "gone"))
		}, BundleTarGz, `"gone"`},
		{"unknown format", func(t *testing.T, dir string) {}, "rar", `unknown format "rar"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := copyRecipeFixture(t, "testdata/bundle/recipe")
			tt.setup(t, src)
			err := WriteBundle(src, io.Discard, tt.format)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("WriteBundle(%q, %q) = %v; want an error containing %q", src, tt.format, err, tt.wantMsg)
			}
		})
	}
}

func TestBundleFormatFromName(t *testing.T) {
	tests := []struct {
		name, want string
		wantErr    bool
	}{
		{"web.tar.gz", BundleTarGz, false},
		{"out/WEB.TGZ", BundleTarGz, false},
		{"web.zip", BundleZip, false},
		{"web.tar", "", true},
		{"web", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BundleFormatFromName(tt.name)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("BundleFormatFromName(%q) = %q, %v; want %q, error %v", tt.name, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestOpenRecipeBundle(t *testing.T) {
	data := makeTarGz(t, tarFile("myrecipe/web.pkr.hcl", "w"))
	rfs, err := OpenRecipeBundle(bytes.NewReader(data), int64(len(data)), "s3://bucket/web.tar.gz", BundleLimits{})
	if err != nil {
		t.Fatalf("OpenRecipeBundle = %v", err)
	}
	defer rfs.Close()
	if got := rfs.Name(); got != "s3://bucket/web.tar.gz" {
		t.Errorf("Name() = %q, want the bundle's name", got)
	}
	if got, err := rfs.ReadFile("web.pkr.hcl"); err != nil || string(got) != "w" {
		t.Errorf("ReadFile(web.pkr.hcl) = %q, %v; want %q", got, err, "w")
	}
}
