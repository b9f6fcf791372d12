package bake

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

var manifestTestTime = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

var manifestTestImages = map[string]string{
	"us-west-2": "ami-0c0c0c0c0c0c0c0c2",
	"us-east-1": "ami-0a0a0a0a0a0a0a0a0",
	"eu-west-1": "ami-0b0b0b0b0b0b0b0b1",
}

func TestManifestGolden(t *testing.T) {
	build := &Build{Name: "app", Type: "amazon-ebs"}
	for _, tc := range []struct {
		name     string
		existing string // a manifest file already there, under testdata/manifest/
		pp       *Manifest
	}{
		{name: "three-regions", pp: &Manifest{CustomData: map[string]string{"channel": "beta", "owner": "platform <ops@example.com>"}}},
		{name: "strip-time", pp: &Manifest{StripTime: true, StripPath: true}},
		{name: "no-post-processor"},
		{name: "appended", existing: "packer-existing.input.json", pp: &Manifest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var existing []byte
			if tc.existing != "" {
				var err error
				if existing, err = os.ReadFile(filepath.Join("testdata", "manifest", tc.existing)); err != nil {
					t.Fatal(err)
				}
			}
			doc, err := ParseManifest(existing)
			if err != nil {
				t.Fatalf("ParseManifest(%s) = %v", tc.existing, err)
			}
			doc.Add(NewManifestEntry(build, "web-0123456789ab", manifestTestImages, manifestTestTime, tc.pp))
			got, err := doc.Encode()
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "manifest", tc.name+".json")
			if updateGolden() {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("manifest %s (-want +got):\n%s", golden, diff)
			}
			manifestCheckPackerShape(t, got)
			wantID := "eu-west-1:ami-0b0b0b0b0b0b0b0b1,us-east-1:ami-0a0a0a0a0a0a0a0a0,us-west-2:ami-0c0c0c0c0c0c0c0c2"
			if id := manifestJQ(t, got, ".builds[-1].artifact_id"); id != `"`+wantID+`"` {
				t.Errorf("jq '.builds[-1].artifact_id' = %s, want %q", id, wantID)
			}
		})
	}
}

// manifestCheckPackerShape checks what Packer's manifest post-processor
// writes: the top-level keys, each build's keys in Packer's order, files
// null, no trailing newline, two-space indentation.
func manifestCheckPackerShape(t *testing.T, data []byte) {
	t.Helper()
	if bytes.HasSuffix(data, []byte("\n")) || !bytes.HasPrefix(data, []byte("{\n  \"builds\": [\n    {\n      \"name\": ")) {
		t.Errorf("manifest layout differs from Packer's MarshalIndent(\"\", \"  \"):\n%s", data)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatalf("manifest is not JSON: %v", err)
	}
	if len(top) != 2 || top["builds"] == nil || top["last_run_uuid"] == nil {
		t.Errorf("manifest top-level keys = %v, want builds and last_run_uuid", manifestKeys(t, data))
	}
	var builds []json.RawMessage
	if err := json.Unmarshal(top["builds"], &builds); err != nil {
		t.Fatal(err)
	}
	for _, b := range builds {
		keys := manifestKeys(t, b)
		want := []string{"name", "builder_type", "build_time", "files", "artifact_id", "packer_run_uuid", "custom_data"}
		if !strings.Contains(string(b), `"build_time"`) {
			want = append(want[:2:2], want[3:]...) // strip_time leaves it out, as Packer's omitempty does
		}
		if diff := cmp.Diff(want, keys); diff != "" {
			t.Errorf("build keys (-want +got):\n%s", diff)
		}
		var e map[string]any
		_ = json.Unmarshal(b, &e)
		if e["files"] != nil || e["builder_type"] != "amazon-ebs" {
			t.Errorf("build = %s: want files null and builder_type amazon-ebs", b)
		}
	}
}

// manifestKeys lists an object's keys in document order.
func manifestKeys(t *testing.T, obj []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// manifestJQ evaluates a jq filter as CI scripts do, with jq itself when
// it is installed, else with the equivalent Go for .builds[-1].<field>.
func manifestJQ(t *testing.T, data []byte, filter string) string {
	t.Helper()
	if jq, err := exec.LookPath("jq"); err == nil {
		cmd := exec.Command(jq, "-c", filter)
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("jq %s: %v", filter, err)
		}
		return strings.TrimSpace(string(out))
	}
	var m struct {
		Builds []map[string]json.RawMessage `json:"builds"`
	}
	if err := json.Unmarshal(data, &m); err != nil || len(m.Builds) == 0 {
		t.Fatalf("manifest: %v", err)
	}
	field := strings.TrimPrefix(filter, ".builds[-1].")
	return string(m.Builds[len(m.Builds)-1][field])
}

func TestArtifactID(t *testing.T) {
	for _, tc := range []struct {
		images map[string]string
		want   string
	}{
		{nil, ""},
		{map[string]string{"us-east-1": "ami-1"}, "us-east-1:ami-1"},
		{map[string]string{"us-west-2": "ami-3", "ap-south-1": "ami-2", "us-east-1": "ami-1"}, "ap-south-1:ami-2,us-east-1:ami-1,us-west-2:ami-3"},
	} {
		if got := ArtifactID(tc.images); got != tc.want {
			t.Errorf("ArtifactID(%v) = %q, want %q", tc.images, got, tc.want)
		}
	}
}

func TestRunUUID(t *testing.T) {
	a := RunUUID("web-0123456789ab")
	u, err := uuid.Parse(a)
	if err != nil || u.Version() != 5 {
		t.Errorf("RunUUID = %q (%v), want a version 5 UUID", a, err)
	}
	if a != RunUUID("web-0123456789ab") || a == RunUUID("web-ba9876543210") {
		t.Errorf("RunUUID is not a function of the build ID")
	}
}

func TestManifestAdd(t *testing.T) {
	build := &Build{Name: "app"}
	m := &ManifestDoc{}
	first := NewManifestEntry(build, "b1", map[string]string{"us-east-1": "ami-1"}, manifestTestTime, nil)
	m.Add(first)
	// The same run again (a rerun of publish) replaces, keeping build_time.
	again := NewManifestEntry(build, "b1", map[string]string{"us-east-1": "ami-1"}, manifestTestTime.Add(time.Hour), nil)
	m.Add(again)
	if len(m.Builds) != 1 || m.Builds[0].BuildTime != manifestTestTime.Unix() {
		t.Errorf("after a rerun: %+v, want one entry with the first build_time", m.Builds)
	}
	// Another build of the same run, and another run: appended.
	m.Add(NewManifestEntry(&Build{Name: "worker"}, "b1", map[string]string{"us-east-1": "ami-2"}, manifestTestTime, nil))
	m.Add(NewManifestEntry(build, "b2", map[string]string{"us-east-1": "ami-3"}, manifestTestTime, nil))
	if len(m.Builds) != 3 || m.LastRunUUID != RunUUID("b2") || m.Builds[2].ArtifactID != "us-east-1:ami-3" {
		t.Errorf("manifest = %+v", m)
	}
}

func TestParseManifest(t *testing.T) {
	for _, in := range []string{"", "  \n"} {
		m, err := ParseManifest([]byte(in))
		if err != nil || len(m.Builds) != 0 {
			t.Errorf("ParseManifest(%q) = %+v, %v; want empty", in, m, err)
		}
	}
	if _, err := ParseManifest([]byte("{")); err == nil {
		t.Errorf("ParseManifest({) = nil error")
	}
}
