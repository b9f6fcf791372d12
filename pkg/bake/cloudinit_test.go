package bake

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	testHostPEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
	testHostPub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost kiln"
	testUserPub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUser kiln"
)

// userDataParts splits user data into its MIME parts' content types and
// bodies, as cloud-init does.
func userDataParts(t *testing.T, ud []byte) (types []string, bodies [][]byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(mimeContentType(ud))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("user data is not multipart/mixed: %q (%v)", mimeContentType(ud), err)
	}
	r := multipart.NewReader(bytes.NewReader(mimeBody(ud)), params["boundary"])
	for {
		p, err := r.NextRawPart()
		if err == io.EOF {
			return types, bodies
		}
		if err != nil {
			t.Fatalf("user data: %v", err)
		}
		b, _ := io.ReadAll(p)
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
		bodies = append(bodies, b)
	}
}

func TestBuildUserData(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("#!/bin/bash\necho zipped\n"))
	zw.Close()
	nested := "Content-Type: multipart/mixed; boundary=\"inner\"\nMIME-Version: 1.0\n\n--inner\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho inner\n--inner--\n"
	for _, c := range []struct {
		name       string
		recipe     []byte
		wantTypes  []string
		wantRecipe string
	}{
		{name: "none", wantTypes: []string{"text/cloud-config"}},
		{name: "script", recipe: []byte("#!/bin/bash\necho hi\n"), wantTypes: []string{"text/x-shellscript", "text/cloud-config"}, wantRecipe: "#!/bin/bash\necho hi\n"},
		{name: "cloud-config", recipe: []byte("#cloud-config\npackages: [nginx]\n"), wantTypes: []string{"text/cloud-config", "text/cloud-config"}, wantRecipe: "#cloud-config\npackages: [nginx]\n"},
		{name: "boothook", recipe: []byte("#cloud-boothook\necho early\n"), wantTypes: []string{"text/cloud-boothook", "text/cloud-config"}, wantRecipe: "#cloud-boothook\necho early\n"},
		{name: "gzip", recipe: gz.Bytes(), wantTypes: []string{"text/x-shellscript", "text/cloud-config"}, wantRecipe: "#!/bin/bash\necho zipped\n"},
		{name: "multipart", recipe: []byte(nested), wantTypes: []string{"multipart/mixed", "text/cloud-config"}, wantRecipe: nested},
		{name: "other", recipe: []byte("hello\n"), wantTypes: []string{"text/x-not-multipart", "text/cloud-config"}, wantRecipe: "hello\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ud, err := buildUserData(kilnUserDataInput{
				HostKeyPEM: []byte(testHostPEM), HostPublicKey: testHostPub, User: "ubuntu", AuthorizedKey: testUserPub, Recipe: c.recipe,
			})
			if err != nil {
				t.Fatalf("buildUserData: %v", err)
			}
			types, bodies := userDataParts(t, ud)
			if diff := cmp.Diff(c.wantTypes, types); diff != "" {
				t.Errorf("part types (-want +got):\n%s", diff)
			}
			if c.wantRecipe != "" && string(bodies[0]) != c.wantRecipe {
				t.Errorf("recipe part = %q, want %q", bodies[0], c.wantRecipe)
			}
			kiln := bodies[len(bodies)-1]
			if !bytes.HasPrefix(kiln, []byte("#cloud-config\n")) {
				t.Fatalf("kiln part does not start with #cloud-config: %q", kiln)
			}
			var cfg map[string]any
			if err := json.Unmarshal(kiln[len("#cloud-config\n"):], &cfg); err != nil {
				t.Fatalf("kiln part is not JSON (YAML): %v", err)
			}
			if cfg["ssh_deletekeys"] != true {
				t.Errorf("ssh_deletekeys = %v, want true", cfg["ssh_deletekeys"])
			}
			keys, _ := cfg["ssh_keys"].(map[string]any)
			if keys["ed25519_private"] != testHostPEM || keys["ed25519_public"] != testHostPub {
				t.Errorf("ssh_keys = %v", keys)
			}
			users, _ := cfg["users"].([]any)
			if len(users) != 2 || users[0] != "default" {
				t.Errorf("users = %v, want default and the login user", users)
			}
			if _, ok := cfg["merge_how"]; !ok {
				t.Errorf("no merge_how: the recipe's cloud-config would replace kiln's lists")
			}

			got, err := ParseKilnUserData(ud)
			if err != nil {
				t.Fatalf("ParseKilnUserData: %v", err)
			}
			want := &KilnUserData{HostKey: []byte(testHostPEM), HostPublicKey: testHostPub, User: "ubuntu", AuthorizedKeys: []string{testUserPub}}
			if c.wantRecipe != "" {
				want.Recipe = []byte(c.wantRecipe)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ParseKilnUserData (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuildUserDataTooLarge(t *testing.T) {
	_, err := buildUserData(kilnUserDataInput{HostKeyPEM: []byte(testHostPEM), HostPublicKey: testHostPub, Recipe: []byte("#!/bin/sh\n" + strings.Repeat("x", 16<<10))})
	if err == nil || !strings.Contains(err.Error(), "EC2 allows 16384") {
		t.Errorf("buildUserData(17 KiB) = %v, want the 16 KiB limit", err)
	}
}

func TestParseKilnUserDataRejects(t *testing.T) {
	for name, ud := range map[string]string{
		"script":         "#!/bin/sh\necho hi\n",
		"empty":          "",
		"no kiln part":   "Content-Type: multipart/mixed; boundary=\"b\"\nMIME-Version: 1.0\n\n--b\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n--b--\n",
		"kiln part junk": "Content-Type: multipart/mixed; boundary=\"b\"\nMIME-Version: 1.0\n\n--b\nContent-Type: text/cloud-config\nContent-Disposition: attachment; filename=\"kiln.cfg\"\n\n#cloud-config\n{nope\n--b--\n",
	} {
		if _, err := ParseKilnUserData([]byte(ud)); err == nil {
			t.Errorf("ParseKilnUserData(%s) succeeded, want an error", name)
		}
	}
}
