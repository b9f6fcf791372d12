package bake

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"strings"
)

// maxUserData is EC2's limit on user data, before base64 encoding
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-add-user-data.html).
const maxUserData = 16 << 10

// kilnPartName is the file name of kiln's own cloud-config part in the
// user data, by which ParseKilnUserData finds it.
const kilnPartName = "kiln.cfg"

// kilnCloudConfig is kiln's cloud-config part. It is written as JSON, which
// is YAML, so that kiln can read it back without a YAML parser.
type kilnCloudConfig struct {
	// SSHDeleteKeys removes host keys baked into the base image, and
	// SSHKeys installs the one kiln generated; with ssh_keys given,
	// cloud-init generates no other host key, so the instance presents
	// exactly the key provisioning pins.
	SSHDeleteKeys bool              `json:"ssh_deletekeys,omitempty"`
	SSHKeys       map[string]string `json:"ssh_keys,omitempty"`
	// Users keeps the image's default user and adds the login user with
	// kiln's login key.
	Users []any `json:"users,omitempty"`
	// MergeHow makes this part, which comes last, add to the recipe's lists
	// (users) and win on the keys it sets (ssh_keys), instead of cloud-init's
	// default of replacing whole top-level keys.
	MergeHow []cloudInitMerger `json:"merge_how"`
}

type cloudInitMerger struct {
	Name     string   `json:"name"`
	Settings []string `json:"settings"`
}

type cloudInitUser struct {
	Name              string   `json:"name"`
	SSHAuthorizedKeys []string `json:"ssh_authorized_keys,omitempty"`
	Sudo              string   `json:"sudo"`
	Shell             string   `json:"shell"`
	LockPasswd        bool     `json:"lock_passwd"`
}

// kilnUserDataInput is what kiln puts into the instance's user data.
type kilnUserDataInput struct {
	// HostKeyPEM is the SSH host private key (OpenSSH PEM), HostPublicKey
	// its authorized_keys line; both empty for the session_manager
	// transport, which has no SSH server to pin.
	HostKeyPEM    []byte
	HostPublicKey string
	// User is the login user (the user provisioners run as), AuthorizedKey
	// its public key line (empty for session_manager).
	User          string
	AuthorizedKey string
	// Recipe is the recipe's own user data, if any.
	Recipe []byte
}

// buildUserData returns the instance's user data: a MIME multipart message
// (cloud-init's "mime multi part archive") whose first part is the recipe's
// own user data, unchanged and typed by its first line, and whose last part
// is kiln's #cloud-config installing the host key and the login key (for
// session_manager: making sure the user provisioners run as exists, with no
// keys at all). Either
// way the recipe wrote its user data (a shell script, a cloud-config, a
// boothook or a multipart archive of its own), cloud-init runs it as before.
// It fails if the result exceeds EC2's 16 KiB limit.
func buildUserData(in kilnUserDataInput) ([]byte, error) {
	recipe, err := plainUserData(in.Recipe)
	if err != nil {
		return nil, err
	}
	cfg := kilnCloudConfig{
		MergeHow: []cloudInitMerger{
			{Name: "list", Settings: []string{"append"}},
			{Name: "dict", Settings: []string{"recurse_list", "replace"}},
		},
	}
	if len(in.HostKeyPEM) > 0 {
		cfg.SSHDeleteKeys = true
		cfg.SSHKeys = map[string]string{
			"ed25519_private": string(in.HostKeyPEM),
			"ed25519_public":  strings.TrimSpace(in.HostPublicKey),
		}
	}
	if in.User != "" {
		u := cloudInitUser{
			Name:       in.User,
			Sudo:       "ALL=(ALL) NOPASSWD:ALL",
			Shell:      "/bin/bash",
			LockPasswd: true,
		}
		if in.AuthorizedKey != "" {
			u.SSHAuthorizedKeys = []string{strings.TrimSpace(in.AuthorizedKey)}
		}
		cfg.Users = []any{"default", u}
	}
	body, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode cloud-config: %w", err)
	}
	kilnPart := append([]byte("#cloud-config\n"), body...)
	kilnPart = append(kilnPart, '\n')

	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	// A boundary derived from the content cannot occur in it by accident
	// and keeps the user data deterministic for given keys.
	sum := sha256.Sum256(append(append([]byte{}, recipe...), kilnPart...))
	boundary := "kiln-" + hex.EncodeToString(sum[:12])
	if err := w.SetBoundary(boundary); err != nil {
		return nil, fmt.Errorf("user data: %w", err)
	}
	fmt.Fprintf(&buf, "Content-Type: multipart/mixed; boundary=%q\r\nMIME-Version: 1.0\r\n\r\n", boundary)
	if len(recipe) > 0 {
		if err := writePart(w, userDataType(recipe), "recipe-user-data", recipe); err != nil {
			return nil, err
		}
	}
	if err := writePart(w, "text/cloud-config", kilnPartName, kilnPart); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("user data: %w", err)
	}
	if buf.Len() > maxUserData {
		return nil, fmt.Errorf("user data is %d bytes with kiln's cloud-config; EC2 allows %d: shorten user_data", buf.Len(), maxUserData)
	}
	return buf.Bytes(), nil
}

func writePart(w *multipart.Writer, contentType, filename string, body []byte) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", contentType+`; charset="utf-8"`)
	h.Set("MIME-Version", "1.0")
	h.Set("Content-Transfer-Encoding", "8bit")
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", filename))
	pw, err := w.CreatePart(h)
	if err != nil {
		return fmt.Errorf("user data part %s: %w", filename, err)
	}
	if _, err := pw.Write(body); err != nil {
		return fmt.Errorf("user data part %s: %w", filename, err)
	}
	return nil
}

// plainUserData returns the recipe's user data uncompressed: cloud-init
// accepts gzip-compressed user data as a whole, but not a compressed part
// inside a multipart archive.
func plainUserData(b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		return b, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("user_data: gzip: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, maxUserData*16))
	if err != nil {
		return nil, fmt.Errorf("user_data: gzip: %w", err)
	}
	return out, nil
}

// userDataType is cloud-init's content type for user data that starts as b
// does (cloud-init's INCLUSION_TYPES_MAP); a MIME archive of the recipe's
// own is nested whole, which cloud-init walks.
func userDataType(b []byte) string {
	s := string(b)
	if isMIME(b) {
		if mt, params, err := mime.ParseMediaType(mimeContentType(b)); err == nil && strings.HasPrefix(mt, "multipart/") {
			return mime.FormatMediaType(mt, params)
		}
	}
	for _, m := range []struct{ prefix, ctype string }{
		{"#include-once", "text/x-include-once-url"},
		{"#include", "text/x-include-url"},
		{"#cloud-config-archive", "text/cloud-config-archive"},
		{"#cloud-config-jsonp", "text/cloud-config-jsonp"},
		{"#cloud-config", "text/cloud-config"},
		{"#cloud-boothook", "text/cloud-boothook"},
		{"#part-handler", "text/part-handler"},
		{"## template: jinja", "text/jinja2"},
		{"#!", "text/x-shellscript"},
	} {
		if strings.HasPrefix(s, m.prefix) {
			return m.ctype
		}
	}
	return "text/x-not-multipart"
}

// isMIME reports whether b is a MIME message (its first line a header).
func isMIME(b []byte) bool {
	return mimeContentType(b) != ""
}

// mimeContentType returns the Content-Type header of a MIME message b, or
// "" if b does not start with MIME headers.
func mimeContentType(b []byte) string {
	body := mimeBody(b)
	if body == nil {
		return ""
	}
	head := strings.TrimRight(strings.ReplaceAll(string(b[:len(b)-len(body)]), "\r\n", "\n"), "\n")
	for _, line := range strings.Split(head, "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found {
			if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
				continue
			}
			return ""
		}
		if strings.EqualFold(strings.TrimSpace(k), "Content-Type") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// mimeBody returns what follows the headers of a MIME message.
func mimeBody(b []byte) []byte {
	i, j := bytes.Index(b, []byte("\r\n\r\n")), bytes.Index(b, []byte("\n\n"))
	switch {
	case i >= 0 && (j < 0 || i < j):
		return b[i+4:]
	case j >= 0:
		return b[j+2:]
	}
	return nil
}

// KilnUserData is what kiln's cloud-config part of an instance's user data
// carries. Local mode uses it to stand in for cloud-init: its sandbox
// presents HostKey and admits AuthorizedKeys for User (for session_manager,
// which has neither, the local agent brings its own keys).
type KilnUserData struct {
	// HostKey is the SSH host private key, OpenSSH PEM. It is a secret.
	HostKey []byte
	// HostPublicKey is the host key's authorized_keys line, which
	// provisioning pins.
	HostPublicKey string
	// User is the login user; AuthorizedKeys are its public keys. For
	// session_manager, User is the user provisioners run as (if the recipe
	// names one) and AuthorizedKeys is empty.
	User           string
	AuthorizedKeys []string
	// Recipe is the recipe's own user data part, if any.
	Recipe []byte
}

// ParseKilnUserData reads back the user data that launch gave an instance
// (decoded from base64): the host key, login user and authorized keys of
// kiln's cloud-config part, and the recipe's own part. It fails when there
// is no kiln part; a part without a host key (session_manager) is not an
// error, so a caller that needs the key checks HostKey.
func ParseKilnUserData(userData []byte) (*KilnUserData, error) {
	ct := mimeContentType(userData)
	mt, params, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, errors.New("parse user data: not kiln's multipart user data")
	}
	body := mimeBody(userData)
	r := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	out := &KilnUserData{}
	found := false
	for {
		p, err := r.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse user data: %w", err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, fmt.Errorf("parse user data: %w", err)
		}
		if p.FileName() != kilnPartName {
			out.Recipe = b
			continue
		}
		found = true
		_, js, _ := bytes.Cut(b, []byte("\n"))
		var cfg struct {
			SSHKeys map[string]string `json:"ssh_keys"`
			Users   []json.RawMessage `json:"users"`
		}
		if err := json.Unmarshal(js, &cfg); err != nil {
			return nil, fmt.Errorf("parse user data: kiln's cloud-config: %w", err)
		}
		if k := cfg.SSHKeys["ed25519_private"]; k != "" {
			out.HostKey = []byte(k)
		}
		out.HostPublicKey = cfg.SSHKeys["ed25519_public"]
		for _, raw := range cfg.Users {
			var u cloudInitUser
			if json.Unmarshal(raw, &u) == nil && u.Name != "" {
				out.User = u.Name
				out.AuthorizedKeys = u.SSHAuthorizedKeys
			}
		}
	}
	if !found {
		return nil, errors.New("parse user data: no kiln cloud-config part")
	}
	return out, nil
}
