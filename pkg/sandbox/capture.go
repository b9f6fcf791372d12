package sandbox

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrStopped is returned by Changed and Capture after Stop, which removes
// what they read.
var ErrStopped = errors.New("sandbox stopped")

// overlayfs marks a deleted file with a 0/0 character device, and a
// directory that replaced (rather than merged with) a lower one with this
// extended attribute; its other trusted.overlay.* attributes are its own
// bookkeeping, not the recipe's.
const (
	overlayXattrPrefix = "trusted.overlay."
	opaqueXattr        = "trusted.overlay.opaque"
)

// Changed returns the absolute paths, as seen inside the sandbox, that the
// sandbox's processes created, modified or deleted, sorted. A directory is
// listed only if it is new, was replaced, or had its owner or mode changed;
// not merely because something in it changed.
//
// Call it while no recipe command runs: files that vanish during the walk
// make it fail. A session with a terminal is recorded in /var/log/wtmp and
// /var/log/lastlog, as on a real instance.
func (s *Sandbox) Changed() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, ErrStopped
	}
	upper := filepath.Join(s.dir, "upper")
	var changed []string
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		if rel == "." {
			return nil
		}
		if !d.IsDir() {
			changed = append(changed, "/"+rel)
			return nil
		}
		if isOpaque(p) || s.dirChanged(p, rel) {
			changed = append(changed, "/"+rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list changes of sandbox %s: %w", s.addr, err)
	}
	sort.Strings(changed)
	return changed, nil
}

// dirChanged reports whether the upper directory p differs from the
// directory it covers in the lower layers (setup, then the host's root):
// overlayfs copies a directory up, unchanged, whenever anything inside it
// changes.
func (s *Sandbox) dirChanged(p, rel string) bool {
	up, err := os.Lstat(p)
	if err != nil {
		return true
	}
	for _, lower := range []string{filepath.Join(s.dir, "setup", rel), filepath.Join("/", rel)} {
		lo, err := os.Lstat(lower)
		if err != nil {
			continue
		}
		if isWhiteout(lo) {
			return true // deleted below, so new here
		}
		if !lo.IsDir() || lo.Mode() != up.Mode() {
			return true
		}
		us, ls := up.Sys().(*syscall.Stat_t), lo.Sys().(*syscall.Stat_t)
		return us.Uid != ls.Uid || us.Gid != ls.Gid
	}
	return true
}

// Capture writes a gzip-compressed tar of everything the sandbox changed,
// in the layer format of OCI images: paths relative to /, numeric owners,
// extended attributes as PAX records, a deleted path as an empty file named
// .wh.<name> beside it, and a directory that replaced a lower one as a
// .wh..wh..opq entry inside it. Directories appear with the files in them,
// changed or not, so their owners and modes are kept.
func (s *Sandbox) Capture(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrStopped
	}
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	if err := s.writeTar(tw); err != nil {
		return fmt.Errorf("capture sandbox %s: %w", s.addr, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("capture sandbox %s: %w", s.addr, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("capture sandbox %s: %w", s.addr, err)
	}
	return nil
}

func (s *Sandbox) writeTar(tw *tar.Writer) error {
	upper := filepath.Join(s.dir, "upper")
	links := map[uint64]string{} // inode -> first name, for hard links
	return filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		if rel == "." {
			return nil
		}
		name := filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)

		if isWhiteout(fi) {
			// Checked first: overlayfs hard-links its whiteouts to
			// one another.
			return tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeReg,
				Name:     path.Join(path.Dir(name), ".wh."+path.Base(name)),
				ModTime:  fi.ModTime(),
			})
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil // tar cannot hold one, and it would be stale anyway
		}

		var link string
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		hdr.Name = name
		if fi.IsDir() {
			hdr.Name += "/"
		}
		// Names would come from the host's /etc/passwd, which need not
		// match the sandbox's.
		hdr.Uname, hdr.Gname = "", ""
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := links[st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[st.Ino] = name
			}
		}
		xattrs, err := recipeXattrs(p)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for k, v := range xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if fi.IsDir() && isOpaque(p) {
			return tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeReg,
				Name:     name + "/.wh..wh..opq",
				ModTime:  fi.ModTime(),
			})
		}
		return nil
	})
}

func isWhiteout(fi fs.FileInfo) bool {
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Rdev == 0
}

func isOpaque(p string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(p, opaqueXattr, buf)
	return err == nil && string(buf[:n]) == "y"
}

// recipeXattrs returns p's extended attributes (file capabilities, ACLs,
// ...) except overlayfs's own.
func recipeXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" || strings.HasPrefix(name, overlayXattrPrefix) {
			continue
		}
		vsize, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		val := make([]byte, vsize)
		vsize, err = unix.Lgetxattr(p, name, val)
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		out[name] = string(val[:vsize])
	}
	return out, nil
}
