package csi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The manifests of deploy/kubernetes: a cluster runs nowhere here, so this
// checks the fields that decide whether the driver reaches secretfs and
// what secretfs reads of a class.

const (
	providersDir = "/etc/kubernetes/secrets-store-csi-providers"
	driverName   = "secrets-store.csi.k8s.io"
)

type doc = map[string]any

func manifests(t *testing.T) map[string][]doc {
	t.Helper()
	files, err := filepath.Glob("../deploy/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	byKind := map[string][]doc{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var d doc
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			kind, _ := d["kind"].(string)
			if kind == "" || d["apiVersion"] == nil {
				t.Fatalf("%s: a document without kind or apiVersion", f)
			}
			byKind[kind] = append(byKind[kind], d)
		}
	}
	return byKind
}

// at walks d along keys (a number indexes a list).
func at(d any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, _ := d.(doc)
			d = m[k]
		case int:
			l, _ := d.([]any)
			if k >= len(l) {
				return nil
			}
			d = l[k]
		}
	}
	return d
}

func str(d any, keys ...any) string { s, _ := at(d, keys...).(string); return s }

func TestManifestsProviderDaemonSet(t *testing.T) {
	m := manifests(t)
	if len(m["DaemonSet"]) != 1 {
		t.Fatalf("%d DaemonSets, want 1", len(m["DaemonSet"]))
	}
	ds := m["DaemonSet"][0]
	spec := at(ds, "spec", "template", "spec")
	c := at(spec, "containers", 0)
	var args []string
	for _, a := range at(c, "args").([]any) {
		args = append(args, a.(string))
	}
	flag := func(name string) string {
		for i, a := range args {
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v
			}
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
		}
		return ""
	}
	if args[0] != "csi-provider" {
		t.Errorf("args start %q, want csi-provider", args[0])
	}
	// The driver dials PROVIDERS_DIR/<spec.provider>.sock.
	if got, want := flag("--endpoint"), providersDir+"/secretfs.sock"; got != want {
		t.Errorf("--endpoint = %q, want %q", got, want)
	}
	var mounted bool
	for _, vm := range at(c, "volumeMounts").([]any) {
		name := str(vm, "name")
		for _, v := range at(spec, "volumes").([]any) {
			if str(v, "name") == name && str(v, "hostPath", "path") == providersDir && str(vm, "mountPath") == providersDir {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("the container does not mount hostPath %s at the same path", providersDir)
	}
	_, port, _ := strings.Cut(flag("--health-addr"), ":")
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := str(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path = %q, want %q", probe, got, path)
		}
		if got := fmt.Sprint(at(c, probe, "httpGet", "port")); port == "" || got != port {
			t.Errorf("%s port = %v, want --health-addr's %q", probe, at(c, probe, "httpGet", "port"), port)
		}
	}
	sc := at(c, "securityContext")
	if at(sc, "allowPrivilegeEscalation") != false || at(sc, "readOnlyRootFilesystem") != true || !slices.Contains(at(sc, "capabilities", "drop").([]any), any("ALL")) {
		t.Errorf("securityContext %v: want no privilege escalation, a read-only root and every capability dropped", sc)
	}
	sa := str(spec, "serviceAccountName")
	found := false
	for _, d := range m["ServiceAccount"] {
		if str(d, "metadata", "name") == sa && str(d, "metadata", "namespace") == str(ds, "metadata", "namespace") {
			found = true
		}
	}
	if !found {
		t.Errorf("the DaemonSet's service account %q is not among the manifests", sa)
	}
}

func TestManifestsCSIDriverRequestsTheTokens(t *testing.T) {
	m := manifests(t)
	if len(m["CSIDriver"]) != 1 {
		t.Fatalf("%d CSIDriver objects, want 1", len(m["CSIDriver"]))
	}
	d := m["CSIDriver"][0]
	if str(d, "metadata", "name") != driverName || at(d, "spec", "requiresRepublish") != true || at(d, "spec", "podInfoOnMount") != true {
		t.Errorf("CSIDriver %v: want %s with requiresRepublish and podInfoOnMount", at(d, "spec"), driverName)
	}
	var auds []string
	for _, r := range at(d, "spec", "tokenRequests").([]any) {
		auds = append(auds, str(r, "audience"))
	}
	for _, want := range []string{DefaultVaultAudience, DefaultAWSAudience} {
		if !slices.Contains(auds, want) {
			t.Errorf("tokenRequests %q lack %q", auds, want)
		}
	}
}

// Every SecretProviderClass reaches secretfs and is a request it accepts,
// and the example pod mounts one of them.
func TestManifestsSecretProviderClasses(t *testing.T) {
	m := manifests(t)
	classes := map[string]bool{}
	for _, spc := range m["SecretProviderClass"] {
		name := str(spc, "metadata", "name")
		classes[name] = true
		if got := str(spc, "spec", "provider"); got != "secretfs" {
			t.Errorf("%s: spec.provider = %q, want secretfs (the socket's name)", name, got)
		}
		attrs := map[string]string{AttrPodNamespace: str(spc, "metadata", "namespace"), AttrPodName: "p", AttrServiceAccount: "sa",
			AttrTokens: `{"vault":{"token":"t"},"sts.amazonaws.com":{"token":"t"}}`, "secretProviderClass": name}
		for k, v := range at(spc, "spec", "parameters").(doc) {
			attrs[k] = v.(string)
		}
		b, _ := json.Marshal(attrs)
		req, err := ParseMount(string(b), "420")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, o := range req.Objects {
			if o.Template == nil && !slices.Contains([]string{"aws", "vault"}, o.Ref.Provider) {
				t.Errorf("%s: %s is not a provider offered by default", name, o.What())
			}
		}
	}
	if len(classes) < 3 {
		t.Errorf("%d classes, want examples for AWS, Vault and both", len(classes))
	}
	if len(m["Pod"]) != 1 {
		t.Fatalf("%d pods, want 1", len(m["Pod"]))
	}
	p := m["Pod"][0]
	v := at(p, "spec", "volumes", 0, "csi")
	if str(v, "driver") != driverName || at(v, "readOnly") != true || !classes[str(v, "volumeAttributes", "secretProviderClass")] {
		t.Errorf("the pod's volume %v: want %s, readOnly, and a class of these manifests", v, driverName)
	}
	if str(p, "spec", "serviceAccountName") == "" {
		t.Error("the pod names no service account: that is its identity")
	}
}
