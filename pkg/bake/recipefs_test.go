package bake

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

func TestRecipeFSResolvePath(t *testing.T) {
	tests := []struct {
		in   string
		want string
		// why is part of the reason given when in is refused.
		why string
	}{
		{in: "scripts/setup.sh", want: "scripts/setup.sh"},
		{in: "./files/app.conf", want: "files/app.conf"},
		{in: "./files/", want: "files"},
		{in: "./x", want: "x"},
		{in: ".", want: "."},
		{in: "./", want: "."},
		{in: "a//b/./c", want: "a/b/c"},
		{in: "a/../b", want: "b"},
		{in: "a/..", want: "."},
		{in: "~/x", want: "~/x"},
		{in: "/proc/self/environ", why: "absolute"},
		{in: "/etc/passwd", why: "absolute"},
		{in: "//server/share", why: "absolute"},
		{in: "../x", why: `".."`},
		{in: "..", why: `".."`},
		{in: "a/../../b", why: `".."`},
		{in: "./scripts/../../../etc/shadow", why: `".."`},
		{in: "", why: "empty"},
		{in: "a\x00b", why: "NUL"},
		{in: "scripts/setup.sh\x00.txt", why: "NUL"},
		{in: `scripts\setup.sh`, why: "backslash"},
		{in: `..\..\x`, why: "backslash"},
		{in: "C:/Windows/win.ini", why: "drive-letter"},
		{in: "c:x", why: "drive-letter"},
		{in: strings.Repeat("a/", 2049), why: "longer than 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ResolvePath(tt.in)
			if tt.why == "" {
				if err != nil || got != tt.want {
					t.Errorf("ResolvePath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("ResolvePath(%q) = %q, %v; want ErrUnsafePath", tt.in, got, err)
			}
			var upe *UnsafePathError
			if !errors.As(err, &upe) || upe.Path != tt.in || !strings.Contains(upe.Reason, tt.why) {
				t.Errorf("ResolvePath(%q) = %v; want an *UnsafePathError for %q saying %q", tt.in, err, tt.in, tt.why)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
				t.Errorf("ResolvePath(%q) = %q; want the message to name the path", tt.in, err)
			}
		})
	}
}

// escapingDiskRecipe makes a recipe folder next to a folder with a secret, and
// links from the recipe into it in every way a recipe might try.
func escapingDiskRecipe(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root, outside = filepath.Join(base, "recipe"), filepath.Join(base, "outside")
	writeRecipeFile(t, filepath.Join(root, "web.pkr.hcl"), "build {}\n")
	writeRecipeFile(t, filepath.Join(root, "scripts/setup.sh"), "#!/bin/sh\n")
	writeRecipeFile(t, filepath.Join(outside, "secret"), "secret\n")
	links := map[string]string{
		"setup.sh":       "scripts/setup.sh",                   // inside: allowed
		"scripts/again":  "../scripts",                         // inside: allowed
		"abs-secret":     filepath.Join(outside, "secret"),     // absolute, outside
		"rel-secret":     "../outside/secret",                  // relative, outside
		"scripts/deeper": "../../outside",                      // folder outside
		"etc":            "/etc",                               // system folder
		"hop":            "scripts/../../outside/secret",       // climbs through a real folder
		"via-link":       "scripts/again/../../outside/secret", // climbs through a link
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	return root, outside
}

func TestRecipeFSOpenDir(t *testing.T) {
	root, _ := escapingDiskRecipe(t)
	rfs, err := OpenRecipeDir(root)
	if err != nil {
		t.Fatalf("OpenRecipeDir(%q) = %v", root, err)
	}
	defer rfs.Close()
	if got := rfs.Name(); got != root {
		t.Errorf("Name() = %q, want %q", got, root)
	}
	for _, p := range []string{"web.pkr.hcl", "setup.sh", "scripts/again/setup.sh"} {
		if _, err := rfs.ReadFile(p); err != nil {
			t.Errorf("ReadFile(%q) = %v, want the file", p, err)
		}
	}
	refused := []string{
		"abs-secret", "rel-secret", "scripts/deeper/secret", "etc/passwd", "etc/hostname",
		"hop", "via-link", "../outside/secret", "/etc/passwd",
	}
	for _, p := range refused {
		if b, err := rfs.ReadFile(p); err == nil {
			t.Errorf("ReadFile(%q) = %q; want an error, the link leads outside the root", p, b)
		}
		if f, err := rfs.Open(p); err == nil {
			f.Close()
			t.Errorf("Open(%q) succeeded; want an error, the link leads outside the root", p)
		}
		if _, err := rfs.Stat(p); err == nil {
			t.Errorf("Stat(%q) succeeded; want an error, the link leads outside the root", p)
		}
	}
}

func TestRecipeFSOpenDirConforms(t *testing.T) {
	root := copyRecipeFixture(t, "testdata/bundle/recipe")
	if err := os.Symlink("files", filepath.Join(root, "more")); err != nil {
		t.Fatal(err)
	}
	rfs, err := OpenRecipeDir(root)
	if err != nil {
		t.Fatalf("OpenRecipeDir(%q) = %v", root, err)
	}
	defer rfs.Close()
	if err := fstest.TestFS(rfs, "web.pkr.hcl", "scripts/setup.sh", "files/conf.d/logging.conf", "more"); err != nil {
		t.Errorf("fstest.TestFS(OpenRecipeDir) = %v", err)
	}
}

func TestRecipeFSOpenDirRefusesFIFO(t *testing.T) {
	mkfifo, err := exec.LookPath("mkfifo")
	if err != nil {
		t.Skip("no mkfifo")
	}
	root := t.TempDir()
	if out, err := exec.Command(mkfifo, filepath.Join(root, "pipe")).CombinedOutput(); err != nil {
		t.Skipf("mkfifo: %v: %s", err, out)
	}
	rfs, err := OpenRecipeDir(root)
	if err != nil {
		t.Fatalf("OpenRecipeDir = %v", err)
	}
	defer rfs.Close()
	// Opening a FIFO for reading would block until a writer came along.
	if _, err := rfs.ReadFile("pipe"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("ReadFile(pipe) = %v; want a not-a-regular-file error", err)
	}
	if _, err := ListFiles(rfs, "."); err == nil {
		t.Errorf("ListFiles(.) with a FIFO = nil error; want one naming it")
	}
}

func TestRecipeFSOpenDirMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := OpenRecipeDir(missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("OpenRecipeDir(%q) = %v; want fs.ErrNotExist naming the folder", missing, err)
	}
}

// filesetRecipe is an in-memory recipe for the listing and globbing tests.
func filesetRecipe(t *testing.T) *RecipeFS {
	t.Helper()
	rfs, err := NewMemRecipeFS("test", map[string][]byte{
		"web.pkr.hcl":                      []byte("w"),
		"variables.pkr.hcl":                []byte("v"),
		".hidden.sh":                       []byte("h"),
		"a.txt":                            []byte("a"),
		"b.txt":                            []byte("b"),
		"c.txt":                            []byte("c"),
		"scripts/1.sh":                     []byte("1"),
		"scripts/22.sh":                    []byte("22"),
		"scripts/lib/common.sh":            []byte("c"),
		"files/app.conf":                   []byte("app"),
		"files/conf.d/logging.conf":        []byte("log"),
		"ansible/playbook.yml":             []byte("p"),
		"ansible/roles/web/tasks/main.yml": []byte("m"),
		"ansible/roles/web/vars/main.yaml": []byte("v"),
		"{odd}.txt":                        []byte("o"),
	})
	if err != nil {
		t.Fatalf("NewMemRecipeFS = %v", err)
	}
	return rfs
}

func TestRecipeFSFileset(t *testing.T) {
	rfs := filesetRecipe(t)
	tests := []struct {
		dir, pattern string
		want         []string
	}{
		{".", "*.pkr.hcl", []string{"variables.pkr.hcl", "web.pkr.hcl"}},
		{".", "*.sh", []string{".hidden.sh"}},
		{".", "**/*.sh", []string{".hidden.sh", "scripts/1.sh", "scripts/22.sh", "scripts/lib/common.sh"}},
		{".", "scripts/*.sh", []string{"scripts/1.sh", "scripts/22.sh"}},
		{".", "scripts/?.sh", []string{"scripts/1.sh"}},
		{".", "scripts/**", []string{"scripts/1.sh", "scripts/22.sh", "scripts/lib/common.sh"}},
		{".", "scripts/**/*.sh", []string{"scripts/1.sh", "scripts/22.sh", "scripts/lib/common.sh"}},
		{".", "**/main.{yml,yaml}", []string{"ansible/roles/web/tasks/main.yml", "ansible/roles/web/vars/main.yaml"}},
		{".", "{a,b}.txt", []string{"a.txt", "b.txt"}},
		{".", "{a,{b,c}}.txt", []string{"a.txt", "b.txt", "c.txt"}},
		{".", "{scripts/lib,files}/*", []string{"files/app.conf", "scripts/lib/common.sh"}},
		{".", "[ab].txt", []string{"a.txt", "b.txt"}},
		{".", "[a-b].txt", []string{"a.txt", "b.txt"}},
		{".", "[!a].txt", []string{"b.txt", "c.txt"}},
		{".", "[^a].txt", []string{"b.txt", "c.txt"}},
		{".", `\{odd\}.txt`, []string{"{odd}.txt"}},
		{".", "scripts", nil}, // folders are not files
		{".", "files/*", []string{"files/app.conf"}},
		{".", "./files/*", []string{"files/app.conf"}},
		{".", "/files/*", []string{"files/app.conf"}},
		{"ansible", "**/*.yml", []string{"playbook.yml", "roles/web/tasks/main.yml"}},
		{"./ansible/roles/", "*/tasks/*", []string{"web/tasks/main.yml"}},
		{"files", "**", []string{"app.conf", "conf.d/logging.conf"}},
		{"missing", "*", nil},
		{"a.txt", "*", nil},
		{".", "**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/x", nil},
	}
	for _, tt := range tests {
		t.Run(tt.dir+" "+tt.pattern, func(t *testing.T) {
			got, err := Fileset(rfs, tt.dir, tt.pattern)
			if err != nil {
				t.Fatalf("Fileset(%q, %q) = %v", tt.dir, tt.pattern, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Fileset(%q, %q) (-want +got):\n%s", tt.dir, tt.pattern, diff)
			}
		})
	}
}

func TestRecipeFSFilesetRefuses(t *testing.T) {
	rfs := filesetRecipe(t)
	tests := []struct {
		dir, pattern string
		want         string
		wantUnsafe   bool
	}{
		{"..", "*", `".."`, true},
		{"/etc", "*", "absolute", true},
		{".", "../*", `".."`, true},
		{".", "a/../../*", `".."`, true},
		{"scripts", "{x,../../y}", `".."`, true},
		{".", "[", "syntax error", false},
		{".", "{a,b", "unclosed", false},
		{".", strings.Repeat("{a,b}", 11), "more than 1024 alternatives", false},
	}
	for _, tt := range tests {
		t.Run(tt.dir+" "+tt.pattern, func(t *testing.T) {
			got, err := Fileset(rfs, tt.dir, tt.pattern)
			if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, ErrUnsafePath) != tt.wantUnsafe {
				t.Errorf("Fileset(%q, %q) = %q, %v; want an error containing %q (unsafe: %v)", tt.dir, tt.pattern, got, err, tt.want, tt.wantUnsafe)
			}
		})
	}
}

func TestRecipeFSFilesetLinks(t *testing.T) {
	fsys, err := openBundleBytes(makeTarGz(t,
		tarFile("scripts/a.sh", "a"),
		tarSymlink("linked.sh", "scripts/a.sh"),
		tarSymlink("loop", "."),
		tarSymlink("gone.txt", "nowhere"),
	), "links.tar.gz", BundleLimits{})
	if err != nil {
		t.Fatalf("OpenBundle = %v", err)
	}
	got, err := Fileset(fsys, ".", "**/*.sh")
	if err != nil {
		t.Fatalf("Fileset(., **/*.sh) = %v", err)
	}
	// loop/ is a link to the root: not searched, or this would not end.
	if diff := cmp.Diff([]string{"linked.sh", "scripts/a.sh"}, got); diff != "" {
		t.Errorf("Fileset(., **/*.sh) (-want +got):\n%s", diff)
	}
	if _, err := Fileset(fsys, ".", "*.txt"); err == nil || !strings.Contains(err.Error(), "gone.txt") {
		t.Errorf("Fileset(., *.txt) = %v; want an error naming the dangling gone.txt", err)
	}
}

func TestRecipeFSListFiles(t *testing.T) {
	rfs := filesetRecipe(t)
	tests := []struct {
		dir  string
		want []string
	}{
		{"files", []string{"app.conf", "conf.d/logging.conf"}},
		{"./files/", []string{"app.conf", "conf.d/logging.conf"}},
		{"scripts/lib", []string{"common.sh"}},
		{"ansible/roles", []string{"web/tasks/main.yml", "web/vars/main.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			got, err := ListFiles(rfs, tt.dir)
			if err != nil {
				t.Fatalf("ListFiles(%q) = %v", tt.dir, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ListFiles(%q) (-want +got):\n%s", tt.dir, diff)
			}
		})
	}
	for _, dir := range []string{"missing", "a.txt", "../x", "/etc"} {
		if got, err := ListFiles(rfs, dir); err == nil || !strings.Contains(err.Error(), dir) {
			t.Errorf("ListFiles(%q) = %q, %v; want an error naming it", dir, got, err)
		}
	}
}

func TestRecipeFSContentHash(t *testing.T) {
	base := map[string]string{"web.pkr.hcl": "build {}\n", "scripts/setup.sh": "#!/bin/sh\n", "empty": ""}
	hash := func(t *testing.T, files map[string]string, paths ...string) string {
		t.Helper()
		m := fstest.MapFS{}
		for p, body := range files {
			m[p] = &fstest.MapFile{Data: []byte(body)}
		}
		if paths == nil {
			for p := range files {
				paths = append(paths, p)
			}
		}
		h, err := ContentHash(m, paths)
		if err != nil {
			t.Fatalf("ContentHash(%q) = %v", paths, err)
		}
		return h
	}
	want := hash(t, base, "web.pkr.hcl", "scripts/setup.sh", "empty")
	if !strings.HasPrefix(want, "sha256:") || len(want) != len("sha256:")+64 {
		t.Fatalf("ContentHash = %q; want sha256:<64 hex digits>", want)
	}

	t.Run("stable", func(t *testing.T) {
		same := [][]string{
			{"web.pkr.hcl", "scripts/setup.sh", "empty"},
			{"empty", "scripts/setup.sh", "web.pkr.hcl"},
			{"./web.pkr.hcl", "scripts//setup.sh", "empty", "empty"},
		}
		for _, paths := range same {
			for range 3 {
				if got := hash(t, base, paths...); got != want {
					t.Errorf("ContentHash(%q) = %q, want %q", paths, got, want)
				}
			}
		}
	})

	t.Run("changes", func(t *testing.T) {
		tests := []struct {
			name  string
			files map[string]string
		}{
			{"a byte", map[string]string{"web.pkr.hcl": "build {}\r", "scripts/setup.sh": "#!/bin/sh\n", "empty": ""}},
			{"a byte added", map[string]string{"web.pkr.hcl": "build {}\n", "scripts/setup.sh": "#!/bin/sh\n", "empty": "\x00"}},
			{"a name", map[string]string{"web.pkr.hcl": "build {}\n", "scripts/setup.bash": "#!/bin/sh\n", "empty": ""}},
			{"a file fewer", map[string]string{"web.pkr.hcl": "build {}\n", "scripts/setup.sh": "#!/bin/sh\n"}},
			{"a file more", map[string]string{"web.pkr.hcl": "build {}\n", "scripts/setup.sh": "#!/bin/sh\n", "empty": "", "x": ""}},
		}
		for _, tt := range tests {
			if got := hash(t, tt.files); got == want {
				t.Errorf("ContentHash after changing %s = %q, the same as before", tt.name, got)
			}
		}
	})

	t.Run("splits do not collide", func(t *testing.T) {
		pairs := [][2]map[string]string{
			{{"a": "bc"}, {"ab": "c"}},
			{{"a": "b", "c": ""}, {"a": "bc"}},
			{{"a": "", "b": "c"}, {"a": "b", "c": ""}},
		}
		for _, p := range pairs {
			if a, b := hash(t, p[0]), hash(t, p[1]); a == b {
				t.Errorf("ContentHash(%v) = ContentHash(%v) = %q", p[0], p[1], a)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		m := fstest.MapFS{"a": &fstest.MapFile{Data: []byte("a")}, "d/x": &fstest.MapFile{}}
		for _, paths := range [][]string{{"missing"}, {"d"}, {"../a"}, {"/etc/passwd"}} {
			if h, err := ContentHash(m, paths); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(paths[0], "./")) {
				t.Errorf("ContentHash(%q) = %q, %v; want an error naming the path", paths, h, err)
			}
		}
	})
}

func TestRecipeFSNewMem(t *testing.T) {
	rfs, err := NewMemRecipeFS("web.pkr.hcl", map[string][]byte{"web.pkr.hcl": []byte("w"), "./a/b": []byte("b")})
	if err != nil {
		t.Fatalf("NewMemRecipeFS = %v", err)
	}
	if err := fstest.TestFS(rfs, "web.pkr.hcl", "a/b"); err != nil {
		t.Errorf("fstest.TestFS(NewMemRecipeFS) = %v", err)
	}
	for _, bad := range []string{"../x", "/x", `a\b`, "a/b/../../../c"} {
		if _, err := NewMemRecipeFS("bad", map[string][]byte{bad: nil}); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("NewMemRecipeFS({%q}) = %v; want ErrUnsafePath", bad, err)
		}
	}
	if _, err := NewMemRecipeFS("dup", map[string][]byte{"a": nil, "./a": nil}); !errors.Is(err, ErrInvalidBundle) {
		t.Errorf("NewMemRecipeFS({a, ./a}) = %v; want a duplicate error", err)
	}
}
