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

// shellScript is one script of a shell provisioner: what it is, where it
// goes on the instance, its content and the command line that runs it.
// Both transports run a shell provisioner as these scripts.
type shellScript struct {
	what    string
	remote  string
	command string
	content func(ctx context.Context) ([]byte, error)
}

// shellScripts are a shell provisioner's scripts, in order: the inline
// commands (written to a script that starts with inline_shebang, as Packer
// does), then script and scripts. Each goes to remote_folder and runs
// through execute_command.
func shellScripts(sc stepContext, sh *Shell) []shellScript {
	folder := cmp.Or(sh.RemoteFolder, sc.tempDir)
	vars := shellVars(sc.build, sh)
	var scripts []shellScript
	if len(sh.Inline) > 0 {
		inline := inlineScript(sh)
		scripts = append(scripts, shellScript{what: "inline commands", content: func(context.Context) ([]byte, error) { return inline, nil }})
	}
	for _, s := range sh.Scripts {
		scripts = append(scripts, shellScript{what: "script " + s, content: func(ctx context.Context) ([]byte, error) {
			return readRecipeFile(ctx, sc.files, s)
		}})
	}
	for i := range scripts {
		scripts[i].remote = path.Join(folder, fmt.Sprintf("script_%s-s%d.sh", sc.id, i))
		scripts[i].command = executeCommand(sh.ExecuteCommand, vars, scripts[i].remote)
	}
	return scripts
}

// inlineScript is the script of a shell provisioner's inline commands:
// inline_shebang, then one command per line.
func inlineScript(sh *Shell) []byte {
	shebang := sh.InlineShebang
	if shebang == "" {
		shebang = defaultInlineShebang
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "#!%s\n", shebang)
	for _, c := range sh.Inline {
		b.WriteString(c + "\n")
	}
	return b.Bytes()
}

// shellSteps are a shell provisioner's scripts (shellScripts) as SSH
// steps: each is uploaded to remote_folder and run through
// execute_command; unless skip_clean, it is removed afterwards.
func shellSteps(sc stepContext, sh *Shell) []provisionStep {
	scripts := shellScripts(sc, sh)
	steps := make([]provisionStep, len(scripts))
	for i, s := range scripts {
		steps[i] = provisionStep{
			what:    s.what,
			command: s.command,
			prepare: func(ctx context.Context) error {
				content, err := s.content(ctx)
				if err != nil {
					return err
				}
				return sc.r.upload(ctx, s.remote, bytes.NewReader(content), 0o755)
			},
			cleanup: func(ctx context.Context) error {
				if sh.SkipClean {
					return nil
				}
				return sc.r.remove(ctx, s.remote)
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

// uploadPlan is where the files of one upload source go on the instance,
// with Packer's file provisioner semantics (see fileStep). Both transports
// place files by it.
type uploadPlan struct {
	// dir is set when the source is a folder: its files go under base.
	dir   bool
	base  string
	files []uploadFile
}

// uploadFile is one recipe file of an uploadPlan.
type uploadFile struct {
	// name is the file's clean recipe-relative path.
	name string
	// target is where it goes. With intoDir, a target that is a folder
	// on the instance receives the file as path.Base(name) instead, as
	// Packer's SFTP upload (and scp) does; only the instance can tell.
	target  string
	intoDir bool
}

// planUpload says where the recipe path src goes when uploaded to the
// remote dst; into puts a file into dst whatever it is (several sources).
func planUpload(fsys fs.FS, src, dst string, into bool) (uploadPlan, error) {
	contents := strings.HasSuffix(src, "/")
	clean, err := ResolvePath(src)
	if err != nil {
		return uploadPlan{}, err
	}
	fi, err := fs.Stat(fsys, clean)
	if err != nil {
		return uploadPlan{}, fmt.Errorf("upload %s: %w", src, err)
	}
	if !fi.IsDir() {
		f := uploadFile{name: clean, target: dst}
		switch {
		case strings.HasSuffix(dst, "/") || into:
			f.target = path.Join(dst, path.Base(clean))
		default:
			f.intoDir = true
		}
		return uploadPlan{files: []uploadFile{f}}, nil
	}
	base := dst
	if !contents && clean != "." {
		base = path.Join(dst, path.Base(clean))
	}
	files, err := ListFiles(fsys, clean)
	if err != nil {
		return uploadPlan{}, fmt.Errorf("upload %s: %w", src, err)
	}
	up := uploadPlan{dir: true, base: base}
	for _, rel := range files {
		up.files = append(up.files, uploadFile{name: path.Join(clean, rel), target: path.Join(base, rel)})
	}
	return up, nil
}

// uploadSource uploads the recipe path src to the remote dst over SFTP.
func uploadSource(ctx context.Context, sc stepContext, fsys fs.FS, src, dst string, into bool) error {
	up, err := planUpload(fsys, src, dst, into)
	if err != nil {
		return err
	}
	if up.dir {
		sc.logf("uploading %s (%d files) to %s", src, len(up.files), up.base)
	}
	for _, f := range up.files {
		target := f.target
		if f.intoDir {
			isDir, err := sc.r.isDir(ctx, target)
			if err != nil {
				return err
			}
			if isDir {
				target = path.Join(target, path.Base(f.name))
			}
		}
		if !up.dir {
			sc.logf("uploading %s to %s", src, target)
		}
		if err := uploadRecipeFile(ctx, sc, fsys, f.name, target); err != nil {
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

// ansibleRun is how a playbook runs on the instance, as Packer's
// ansible-local does: playbook_dir's contents, the playbook, the roles (see
// below) and galaxy_file go to a staging folder, with an inventory of the
// instance itself; galaxy requirements are installed into its roles
// folder, and ansible-playbook runs against the instance (-c local). Both
// transports run Ansible by it.
type ansibleRun struct {
	staging string
	// uploads go to the staging folder, in order.
	uploads []uploadRequest
	// inventory is the inventory file's path and content.
	inventory, inventoryContent string
	// commands run in order after the uploads.
	commands []ansibleCommand
}

// uploadRequest is one upload of a recipe path (see planUpload).
type uploadRequest struct {
	src, dst string
	into     bool
}

// ansibleCommand is a command of an Ansible run and the program it needs.
type ansibleCommand struct {
	what, program, command string
}

func planAnsible(sc stepContext, a *Ansible, local bool) ansibleRun {
	staging := path.Join(sc.tempDir, "packer-provisioner-ansible-local", sc.buildID+"-"+sc.id)
	run := ansibleRun{staging: staging, inventory: path.Join(staging, "inventory"), inventoryContent: "127.0.0.1 ansible_connection=local\n"}
	if a.PlaybookDir != "" {
		run.uploads = append(run.uploads, uploadRequest{src: strings.TrimSuffix(a.PlaybookDir, "/") + "/", dst: staging})
	}
	run.uploads = append(run.uploads, uploadRequest{src: a.PlaybookFile, dst: staging + "/"})
	for _, roles := range strings.Split(a.RolesPath, ":") {
		if roles == "" {
			continue
		}
		// ansible's roles_path lists folders of roles; their contents go
		// to roles/. ansible-local's role_paths list roles, each going to
		// roles/<name>.
		src := strings.TrimSuffix(roles, "/")
		if !local {
			src += "/"
		}
		run.uploads = append(run.uploads, uploadRequest{src: src, dst: path.Join(staging, "roles")})
	}
	if a.GalaxyFile != "" {
		run.uploads = append(run.uploads, uploadRequest{src: a.GalaxyFile, dst: staging + "/"})
	}
	cd := "cd " + quoteShell(staging) + " && "
	env := "ANSIBLE_NOCOLOR=1 PYTHONUNBUFFERED=1 ANSIBLE_ROLES_PATH=" + quoteShell(path.Join(staging, "roles")) + " "
	if a.GalaxyFile != "" {
		run.commands = append(run.commands, ansibleCommand{
			what:    "ansible-galaxy install -r " + path.Base(a.GalaxyFile),
			program: "ansible-galaxy",
			command: cd + env + "ansible-galaxy install -r " + quoteShell(path.Base(a.GalaxyFile)) + " -p roles",
		})
	}
	extraVars := fmt.Sprintf("packer_build_name=%s packer_builder_type=%s packer_http_addr=", sc.build.Name, sc.build.Type)
	cmd := cd + env + "ansible-playbook " + quoteShell(path.Base(a.PlaybookFile)) +
		" --extra-vars " + quoteShell(extraVars) + " -c local -i inventory"
	if len(a.ExtraArguments) > 0 {
		// As in Packer, extra_arguments are passed to the shell as written.
		cmd += " " + strings.Join(a.ExtraArguments, " ")
	}
	run.commands = append(run.commands, ansibleCommand{what: "ansible-playbook " + path.Base(a.PlaybookFile), program: "ansible-playbook", command: cmd})
	return run
}

// ansibleSteps are an Ansible run (planAnsible) as SSH steps: one upload
// step staging the playbook, then its commands.
func ansibleSteps(sc stepContext, a *Ansible, local bool) []provisionStep {
	run := planAnsible(sc, a, local)
	upload := provisionStep{
		what: "stage playbook in " + run.staging,
		prepare: func(ctx context.Context) error {
			fsys, err := sc.files(ctx)
			if err != nil {
				return err
			}
			for _, u := range run.uploads {
				if err := uploadSource(ctx, sc, fsys, u.src, u.dst, u.into); err != nil {
					return err
				}
			}
			return sc.r.upload(ctx, run.inventory, strings.NewReader(run.inventoryContent), 0o644)
		},
	}
	steps := []provisionStep{upload}
	for _, c := range run.commands {
		steps = append(steps, provisionStep{
			what:    c.what,
			prepare: func(ctx context.Context) error { return requireCommand(ctx, sc.r, c.program) },
			command: c.command,
		})
	}
	return steps
}

// errMissingCommand is a program a provisioner needs that the instance
// lacks.
var errMissingCommand = errors.New("not installed on the instance")

// installHint says what to do about a program the instance lacks.
const installHint = "install it in an earlier provisioner, for example a shell provisioner running apt-get install -y ansible"

// requireCommand fails when the instance has no program name on the
// login user's PATH.
func requireCommand(ctx context.Context, r *sshRemote, name string) error {
	_, status, err := r.run(ctx, "command -v "+quoteShell(name)+" >/dev/null 2>&1")
	if err != nil {
		return err
	}
	if status != 0 {
		return fmt.Errorf("%s is %w (exit status %s of command -v): %s",
			name, errMissingCommand, strconv.Itoa(status), installHint)
	}
	return nil
}
