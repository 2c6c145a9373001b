package csi

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/secrets-store-csi-driver/pkg/util/fileutil"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"
)

// attrs is a driver's attributes for pod "web" of namespace "shop".
func attrs(extra map[string]string) string {
	m := map[string]string{
		AttrPodName: "web", AttrPodNamespace: "shop", AttrPodUID: "0000-1111", AttrServiceAccount: "web-sa",
		"secretProviderClass": "spc", "csi.storage.k8s.io/ephemeral": "true",
		ParamObjects: "- ref: \"aws:prod/db#password\"\n  path: db/password\n",
	}
	for k, v := range extra {
		if v == "<unset>" {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestParseMount(t *testing.T) {
	req, err := ParseMount(attrs(map[string]string{
		ParamObjects: `
- ref: "aws:prod/db#password"
  path: db/password
  mode: "0400"
- ref: vault:secret/app#api-key
  path: api-key
  mode: 0440
- template: '{{ secret "env:X" }}'
  path: app.env
`,
		ParamVaultRole: "app", ParamAWSRoleARN: "arn:aws:iam::123456789012:role/app", ParamAWSRegion: "eu-west-1",
		AttrTokens: `{"vault":{"token":"tok-v","expirationTimestamp":"2030-01-01T00:00:00Z"},"sts.amazonaws.com":{"token":"tok-a"}}`,
	}), "420")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := req.Pod, (Pod{Name: "web", Namespace: "shop", UID: "0000-1111", ServiceAccount: "web-sa"}); got != want {
		t.Errorf("pod = %+v, want %+v", got, want)
	}
	want := []struct {
		what, path string
		mode       os.FileMode
	}{{"aws:prod/db#password", "db/password", 0o400}, {"vault:secret/app#api-key", "api-key", 0o440}, {"template app.env", "app.env", 0o644}}
	if len(req.Objects) != len(want) {
		t.Fatalf("%d objects, want %d", len(req.Objects), len(want))
	}
	for i, w := range want {
		o := req.Objects[i]
		if o.What() != w.what || o.Path != w.path || o.Mode != w.mode {
			t.Errorf("objects[%d] = %s %s %o, want %s %s %o", i, o.What(), o.Path, o.Mode, w.what, w.path, w.mode)
		}
	}
	if got, want := req.Tokens["vault"], "tok-v"; got != want {
		t.Errorf("vault token = %q, want %q", got, want)
	}
	if got := req.Params[ParamAWSRegion]; got != "eu-west-1" {
		t.Errorf("awsRegion = %q", got)
	}
}

func TestParseMountRefusesWithTheParameterNamed(t *testing.T) {
	obj := func(s string) map[string]string { return map[string]string{ParamObjects: s} }
	for _, tc := range []struct {
		name       string
		extra      map[string]string
		permission string
		param      string
	}{
		{"no objects", map[string]string{ParamObjects: "<unset>"}, "420", ParamObjects},
		{"objects not yaml", obj("- ref: [unclosed"), "420", ParamObjects},
		{"objects empty list", obj("[]"), "420", ParamObjects},
		{"unknown key in an object", obj("- ref: env:X\n  path: x\n  owner: 0\n"), "420", ParamObjects},
		{"bad ref", obj("- ref: 'no-colon'\n  path: x\n"), "420", "objects[0].ref"},
		{"ref and template", obj("- ref: env:X\n  template: y\n  path: x\n"), "420", "objects[0]"},
		{"neither", obj("- path: x\n"), "420", "objects[0]"},
		{"bad template", obj("- template: '{{ secret '\n  path: x\n"), "420", "objects[0].template"},
		{"template too long", obj("- template: '" + strings.Repeat("{{if 1}}", 10000) + strings.Repeat("{{end}}", 10000) + "'\n  path: x\n"), "420", "objects[0].template"},
		{"absolute path", obj("- ref: env:X\n  path: /etc/x\n"), "420", "objects[0].path"},
		{"dot dot", obj("- ref: env:X\n  path: a/../../x\n"), "420", "objects[0].path"},
		{"unclean", obj("- ref: env:X\n  path: a//x\n"), "420", "objects[0].path"},
		{"writer's name", obj("- ref: env:X\n  path: ..data\n"), "420", "objects[0].path"},
		{"empty path", obj("- ref: env:X\n"), "420", "objects[0].path"},
		{"duplicate", obj("- ref: env:X\n  path: x\n- ref: env:Y\n  path: x\n"), "420", "objects[1].path"},
		{"file and dir", obj("- ref: env:X\n  path: x\n- ref: env:Y\n  path: x/y\n"), "420", "objects[1].path"},
		{"bad mode", obj("- ref: env:X\n  path: x\n  mode: \"0999\"\n"), "420", "objects[0].mode"},
		{"mode too big", obj("- ref: env:X\n  path: x\n  mode: \"01777\"\n"), "420", "objects[0].mode"},
		{"bad permission", nil, "rw-r--r--", "permission"},
		{"vaultAddress", map[string]string{ParamVaultAddress: "vault:8200"}, "420", ParamVaultAddress},
		{"vaultRole", map[string]string{ParamVaultRole: "a role"}, "420", ParamVaultRole},
		{"vaultAuthMount", map[string]string{ParamVaultAuthMount: "/kubernetes/"}, "420", ParamVaultAuthMount},
		{"awsRegion", map[string]string{ParamAWSRegion: "Europe"}, "420", ParamAWSRegion},
		{"awsRoleArn", map[string]string{ParamAWSRoleARN: "role/app"}, "420", ParamAWSRoleARN},
		{"unknown parameter", map[string]string{"vaultrole": "app"}, "420", "vaultrole"},
		{"tokens not json", map[string]string{AttrTokens: "SECRET-TOKEN"}, "420", AttrTokens},
		{"no namespace", map[string]string{AttrPodNamespace: "<unset>"}, "420", AttrPodNamespace},
		{"no service account", map[string]string{AttrServiceAccount: "<unset>"}, "420", AttrServiceAccount},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseMount(attrs(tc.extra), tc.permission)
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("error = %v, want a ParamError", err)
			}
			if got, want := pe.Param, tc.param; got != want {
				t.Errorf("parameter named = %q (%v), want %q", got, err, want)
			}
			if strings.Contains(err.Error(), "SECRET-TOKEN") {
				t.Errorf("the error holds the token: %v", err)
			}
		})
	}
	if _, err := ParseMount("{not json", "420"); err == nil {
		t.Error("attributes that are not JSON were accepted")
	}
}

// FuzzParseMount: whatever the driver sends, ParseMount does not panic; what
// it accepts is safe for the driver's writer; what it refuses names a
// parameter and never repeats a token.
func FuzzParseMount(f *testing.F) {
	f.Add("- ref: env:X\n  path: x\n", "420", `{"vault":{"token":"SECRET-TOKEN"}}`)
	f.Add("- ref: aws:a/b@v1#f\n  path: a/b\n  mode: '0400'\n- template: '{{ secret \"env:Y\" | quote }}'\n  path: y\n", "256", "")
	f.Add("- ref: env:X\n  path: ../x\n", "", "{}")
	f.Add("[{ref: 'vault:secret/x#y', path: 'z', mode: 0o440}]", "493", `{"":{"token":"SECRET-TOKEN"}}`)
	f.Fuzz(func(t *testing.T, objects, permission, tokens string) {
		req, err := ParseMount(attrs(map[string]string{ParamObjects: objects, AttrTokens: tokens}), permission)
		if err != nil {
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Param == "" {
				t.Fatalf("error %v names no parameter", err)
			}
			if strings.Contains(tokens, "SECRET-TOKEN") && strings.Contains(err.Error(), "SECRET-TOKEN") {
				t.Fatalf("the error holds the token: %v", err)
			}
			return
		}
		seen := make(map[string]bool)
		var files []*v1alpha1.File
		for _, o := range req.Objects {
			if seen[o.Path] {
				t.Fatalf("accepted path %q twice", o.Path)
			}
			seen[o.Path] = true
			files = append(files, &v1alpha1.File{Path: o.Path, Mode: int32(o.Mode)})
			if o.Mode > 0o777 {
				t.Fatalf("accepted mode %o", o.Mode)
			}
			if o.Template == nil {
				if err := o.Ref.Validate(); err != nil {
					t.Fatalf("accepted ref %v: %v", o.Ref, err)
				}
			}
		}
		// What the driver's own writer checks before it writes.
		if err := fileutil.Validate(files); err != nil {
			t.Fatalf("accepted paths the driver refuses: %v", err)
		}
	})
}
