package bake

// What each provisioner type does on the instance, as a list of steps:
// uploads, and commands that run detached (see job in ssh.go).

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Packer's defaults for the shell provisioner, applied when a plan leaves
// them empty.
const (
	defaultExecuteCommand = "chmod +x {{.Path}}; {{.Vars}} {{.Path}}"
	defaultInlineShebang  = "/bin/sh -e"
	defaultRemoteFolder   = "/tmp"
)

// provisionStep is one thing a provisioner does: an upload (command
// empty), or a command run detached on the instance after prepare.
type provisionStep struct {
	// what names the step in logs ("script scripts/setup.sh").
	what string
	// prepare runs before the command starts (uploads, checks); it does
	// not run again when a later invocation reattaches to the command.
	prepare func(ctx context.Context) error
	// command is the command line; empty for an upload-only step.
	command string
	// cleanup runs after the command ended with a valid exit status.
	cleanup func(ctx context.Context) error
}

// stepContext is what building a provisioner's steps needs.
type stepContext struct {
	r     *sshRemote
	build *Build
	// buildID is the build's identity (State.BuildID).
	buildID string
	// id names this run of the provisioner ("p2-a0", "error-cleanup"),
	// unique within the build.
	id string
	// tempDir is the instance's folder for kiln's files (Provision.TempDir).
	tempDir string
	// files opens the recipe's files on first use.
	files func(ctx context.Context) (fs.FS, error)
	// logf logs a line about the provisioner.
	logf func(format string, args ...any)
}

// provisionerSteps returns the steps of pr.
func provisionerSteps(sc stepContext, pr Provisioner) ([]provisionStep, error) {
	switch {
	case pr.Shell != nil:
		return shellSteps(sc, pr.Shell), nil
	case pr.File != nil:
		return []provisionStep{fileStep(sc, pr.File)}, nil
	case pr.Ansible != nil:
		if pr.Type == "ansible" {
			sc.logf("kiln runs Ansible on the instance itself (as ansible-local does), not from the build host over SSH")
		}
		return ansibleSteps(sc, pr.Ansible, pr.Type != "ansible"), nil
	}
	return nil, fmt.Errorf("provisioner type %q is not supported", pr.Type)
}

// jobRoot is the folder under which the commands of a provisioner whose
// files go to folder keep their job folders.
func jobRoot(folder, buildID string) string {
	return path.Join(folder, ".kiln", buildID)
}

// shellSteps are a shell provisioner's scripts, in order: the inline
// commands (written to a script that starts with inline_shebang, as Packer
// does), then script and scripts. Each is uploaded to remote_folder and run
// through execute_command; unless skip_clean, it is removed afterwards.
func shellSteps(sc stepContext, sh *Shell) []provisionStep {
	folder := cmp.Or(sh.RemoteFolder, sc.tempDir)
	vars := shellVars(sc.build, sh)
	type script struct {
		what    string
		content func(ctx context.Context) ([]byte, error)
	}
	var scripts []script
	if len(sh.Inline) > 0 {
		shebang := sh.InlineShebang
		if shebang == "" {
			shebang = defaultInlineShebang
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "#!%s\n", shebang)
		for _, c := range sh.Inline {
			b.WriteString(c + "\n")
		}
		scripts = append(scripts, script{what: "inline commands", content: func(context.Context) ([]byte, error) { return b.Bytes(), nil }})
	}
	for _, s := range sh.Scripts {
		scripts = append(scripts, script{what: "script " + s, content: func(ctx context.Context) ([]byte, error) {
			return readRecipeFile(ctx, sc.files, s)
		}})
	}
	steps := make([]provisionStep, len(scripts))
	for i, s := range scripts {
		remote := path.Join(folder, fmt.Sprintf("script_%s-s%d.sh", sc.id, i))
		steps[i] = provisionStep{
			what:    s.what,
			command: executeCommand(sh.ExecuteCommand, vars, remote),
			prepare: func(ctx context.Context) error {
				content, err := s.content(ctx)
				if err != nil {
					return err
				}
				return sc.r.upload(ctx, remote, bytes.NewReader(content), 0o755)
			},
			cleanup: func(ctx context.Context) error {
				if sh.SkipClean {
					return nil
				}
				return sc.r.remove(ctx, remote)
			},
		}
	}
	return steps
}

// shellVars renders the environment of a shell provisioner's scripts as
// Packer's {{.Vars}} does: PACKER_BUILD_NAME and PACKER_BUILDER_TYPE, then
// environment_vars and env, sorted by name, each as NAME='value' followed
// by a space, the value single-quoted for the shell.
func shellVars(b *Build, sh *Shell) string {
	env := map[string]string{
		"PACKER_BUILD_NAME":   b.Name,
		"PACKER_BUILDER_TYPE": b.Type,
	}
	for _, kv := range sh.EnvironmentVars {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	maps.Copy(env, sh.Env)
	var s strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		fmt.Fprintf(&s, "%s=%s ", k, quoteShell(env[k]))
	}
	return s.String()
}

var templateField = regexp.MustCompile(`\{\{\s*\.(Vars|Path)\s*\}\}`)

// executeCommand substitutes {{.Vars}} and {{.Path}} in execute_command.
func executeCommand(tmpl, vars, scriptPath string) string {
	if tmpl == "" {
		tmpl = defaultExecuteCommand
	}
	return templateField.ReplaceAllStringFunc(tmpl, func(m string) string {
		if strings.Contains(m, "Vars") {
			return vars
		}
		return scriptPath
	})
}

// validExit reports whether status is one of a shell provisioner's
// valid_exit_codes (by default only 0).
func validExit(sh *Shell, status int) bool {
	if sh == nil || len(sh.ValidExitCodes) == 0 {
		return status == 0
	}
	return slices.Contains(sh.ValidExitCodes, status)
}

// readRecipeFile reads the recipe-relative file p.
func readRecipeFile(ctx context.Context, files func(context.Context) (fs.FS, error), p string) ([]byte, error) {
	fsys, err := files(ctx)
	if err != nil {
		return nil, err
	}
	clean, err := ResolvePath(p)
	if err != nil {
		return nil, err
	}
	b, err := fs.ReadFile(fsys, clean)
	if err != nil {
		return nil, fmt.Errorf("read recipe file %s: %w", p, err)
	}
	return b, nil
}

// fileStep uploads a file provisioner's sources or content, with Packer's
// semantics: a file goes to destination, or into it when destination ends
// with a slash, is an existing folder, or there are several sources; a
// folder source without a trailing slash is uploaded as a folder into
// destination, and with one, its contents are. Parent folders are created
// and file modes kept.
func fileStep(sc stepContext, f *File) provisionStep {
	return provisionStep{
		what: "upload to " + f.Destination,
		prepare: func(ctx context.Context) error {
			if len(f.Sources) == 0 {
				return sc.r.upload(ctx, f.Destination, strings.NewReader(f.Content), 0o644)
			}
			fsys, err := sc.files(ctx)
			if err != nil {
				return err
			}
			for _, src := range f.Sources {
				if err := uploadSource(ctx, sc, fsys, src, f.Destination, len(f.Sources) > 1); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// uploadSource uploads the recipe path src to the remote dst.
func uploadSource(ctx context.Context, sc stepContext, fsys fs.FS, src, dst string, into bool) error {
	contents := strings.HasSuffix(src, "/")
	clean, err := ResolvePath(src)
	if err != nil {
		return err
	}
	fi, err := fs.Stat(fsys, clean)
	if err != nil {
		return fmt.Errorf("upload %s: %w", src, err)
	}
	if !fi.IsDir() {
		target := dst
		isDir := false
		if !strings.HasSuffix(dst, "/") && !into {
			// Packer's SFTP upload puts a file into a remote folder of
			// that name, as scp does.
			if isDir, err = sc.r.isDir(ctx, dst); err != nil {
				return err
			}
		}
		if strings.HasSuffix(dst, "/") || into || isDir {
			target = path.Join(dst, path.Base(clean))
		}
		sc.logf("uploading %s to %s", src, target)
		return uploadRecipeFile(ctx, sc, fsys, clean, target)
	}
	base := dst
	if !contents && clean != "." {
		base = path.Join(dst, path.Base(clean))
	}
	files, err := ListFiles(fsys, clean)
	if err != nil {
		return fmt.Errorf("upload %s: %w", src, err)
	}
	sc.logf("uploading %s (%d files) to %s", src, len(files), base)
	for _, rel := range files {
		if err := uploadRecipeFile(ctx, sc, fsys, path.Join(clean, rel), path.Join(base, rel)); err != nil {
			return err
		}
	}
	return nil
}

// uploadRecipeFile uploads one recipe file, keeping its permission bits.
func uploadRecipeFile(ctx context.Context, sc stepContext, fsys fs.FS, name, target string) error {
	f, err := fsys.Open(name)
	if err != nil {
		return fmt.Errorf("upload %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("upload %s: %w", name, err)
	}
	perm := fi.Mode().Perm()
	if perm == 0 {
		perm = 0o644
	}
	if err := sc.r.upload(ctx, target, f, perm); err != nil {
		return fmt.Errorf("upload %s to %s: %w", name, target, err)
	}
	return nil
}

// ansibleSteps stage the playbook on the instance and run it there, as
// Packer's ansible-local does: playbook_dir's contents, the playbook, the
// roles (see below) and galaxy_file go to a staging folder,
// galaxy requirements are installed into its roles folder, and
// ansible-playbook runs against the instance itself (-c local).
func ansibleSteps(sc stepContext, a *Ansible, local bool) []provisionStep {
	staging := path.Join(sc.tempDir, "packer-provisioner-ansible-local", sc.buildID+"-"+sc.id)
	inventory := "inventory"
	upload := provisionStep{
		what: "stage playbook in " + staging,
		prepare: func(ctx context.Context) error {
			fsys, err := sc.files(ctx)
			if err != nil {
				return err
			}
			if a.PlaybookDir != "" {
				if err := uploadSource(ctx, sc, fsys, strings.TrimSuffix(a.PlaybookDir, "/")+"/", staging, false); err != nil {
					return err
				}
			}
			if err := uploadSource(ctx, sc, fsys, a.PlaybookFile, staging+"/", false); err != nil {
				return err
			}
			for _, roles := range strings.Split(a.RolesPath, ":") {
				if roles == "" {
					continue
				}
				// ansible's roles_path lists folders of roles; their
				// contents go to roles/. ansible-local's role_paths list
				// roles, each going to roles/<name>.
				src := strings.TrimSuffix(roles, "/")
				if !local {
					src += "/"
				}
				if err := uploadSource(ctx, sc, fsys, src, path.Join(staging, "roles"), false); err != nil {
					return err
				}
			}
			if a.GalaxyFile != "" {
				if err := uploadSource(ctx, sc, fsys, a.GalaxyFile, staging+"/", false); err != nil {
					return err
				}
			}
			return sc.r.upload(ctx, path.Join(staging, inventory), strings.NewReader("127.0.0.1 ansible_connection=local\n"), 0o644)
		},
	}
	steps := []provisionStep{upload}
	cd := "cd " + quoteShell(staging) + " && "
	env := "ANSIBLE_NOCOLOR=1 PYTHONUNBUFFERED=1 ANSIBLE_ROLES_PATH=" + quoteShell(path.Join(staging, "roles")) + " "
	if a.GalaxyFile != "" {
		steps = append(steps, provisionStep{
			what:    "ansible-galaxy install -r " + path.Base(a.GalaxyFile),
			prepare: func(ctx context.Context) error { return requireCommand(ctx, sc.r, "ansible-galaxy") },
			command: cd + env + "ansible-galaxy install -r " + quoteShell(path.Base(a.GalaxyFile)) + " -p roles",
		})
	}
	extraVars := fmt.Sprintf("packer_build_name=%s packer_builder_type=%s packer_http_addr=", sc.build.Name, sc.build.Type)
	cmd := cd + env + "ansible-playbook " + quoteShell(path.Base(a.PlaybookFile)) +
		" --extra-vars " + quoteShell(extraVars) + " -c local -i " + inventory
	if len(a.ExtraArguments) > 0 {
		// As in Packer, extra_arguments are passed to the shell as written.
		cmd += " " + strings.Join(a.ExtraArguments, " ")
	}
	steps = append(steps, provisionStep{
		what:    "ansible-playbook " + path.Base(a.PlaybookFile),
		prepare: func(ctx context.Context) error { return requireCommand(ctx, sc.r, "ansible-playbook") },
		command: cmd,
	})
	return steps
}

// errMissingCommand is a program a provisioner needs that the instance
// lacks.
var errMissingCommand = errors.New("not installed on the instance")

// requireCommand fails when the instance has no program name on the
// login user's PATH.
func requireCommand(ctx context.Context, r *sshRemote, name string) error {
	_, status, err := r.run(ctx, "command -v "+quoteShell(name)+" >/dev/null 2>&1")
	if err != nil {
		return err
	}
	if status != 0 {
		return fmt.Errorf("%s is %w (exit status %s of command -v): install it in an earlier provisioner, for example a shell provisioner running apt-get install -y ansible",
			name, errMissingCommand, strconv.Itoa(status))
	}
	return nil
}
