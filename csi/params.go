package csi

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/secretfs/secretfs/resolver"
	"github.com/secretfs/secretfs/templates"
)

// Attributes the driver adds to the class's parameters.
const (
	AttrPodName        = "csi.storage.k8s.io/pod.name"
	AttrPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	AttrPodUID         = "csi.storage.k8s.io/pod.uid"
	AttrServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	AttrTokens         = "csi.storage.k8s.io/serviceAccount.tokens"
	attrPrefix         = "csi.storage.k8s.io/"
)

// Parameters of a SecretProviderClass that secretfs reads.
const (
	ParamObjects        = "objects"
	ParamVaultAddress   = "vaultAddress"
	ParamVaultRole      = "vaultRole"
	ParamVaultAuthMount = "vaultAuthMount"
	ParamVaultNamespace = "vaultNamespace"
	ParamVaultAudience  = "vaultAudience"
	ParamAWSRegion      = "awsRegion"
	ParamAWSRoleARN     = "awsRoleArn"
	ParamAWSAudience    = "awsAudience"
	ParamGCPProvider    = "gcpWorkloadIdentityProvider"
	ParamGCPSA          = "gcpServiceAccount"
	ParamGCPAudience    = "gcpAudience"
	ParamGCPProject     = "gcpProject"
	ParamAzureVault     = "keyvaultName"
	ParamAzureClientID  = "clientID"
	ParamAzureTenantID  = "tenantId"
	ParamAzureAudience  = "azureAudience"
)

// Limits of a request.
const (
	MaxObjects     = 1000
	maxPathLength  = 4096 // the driver's atomic writer's limits
	maxNameLength  = 255
	maxParamLength = 2048
	// MaxTemplate bounds an object's template text: it is parsed in the
	// daemon, whose stack a deep nesting would take.
	MaxTemplate = 64 << 10
)

// params are the parameters secretfs reads, with their checks. The driver
// also sends secretProviderClass (the volume's attribute), which is read by
// the driver itself.
var params = map[string]func(string) error{
	ParamVaultAddress:   checkURL,
	ParamVaultRole:      matches(`^[A-Za-z0-9][A-Za-z0-9_.@-]*$`, "a Vault role name"),
	ParamVaultAuthMount: matches(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`, "a mount path such as kubernetes or jwt, without slashes at the ends"),
	ParamVaultNamespace: matches(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?$`, "a Vault namespace such as team or team/app"),
	ParamVaultAudience:  matches(`^[!-~]+$`, "an audience of the CSIDriver's tokenRequests"),
	ParamAWSRegion:      matches(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`, "an AWS region such as eu-west-1"),
	ParamAWSRoleARN:     matches(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$`, "an IAM role ARN such as arn:aws:iam::123456789012:role/app"),
	ParamAWSAudience:    matches(`^[!-~]+$`, "an audience of the CSIDriver's tokenRequests"),
	ParamGCPProvider: matches(`^//iam\.googleapis\.com/projects/[0-9]{1,19}/locations/global/workloadIdentityPools/[a-z0-9.-]{4,63}/providers/[a-z0-9-]{4,32}$`,
		"a workload identity pool provider such as //iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/POOL/providers/PROVIDER"),
	ParamGCPSA:            matches(`^[a-z0-9][a-z0-9-]{0,62}@[a-z0-9][a-z0-9.-]{0,127}\.gserviceaccount\.com$`, "a service account's email such as app@project.iam.gserviceaccount.com"),
	ParamGCPAudience:      matches(`^[!-~]+$`, "an audience of the CSIDriver's tokenRequests"),
	ParamAzureVault:       matches(`^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$|^https://[a-z0-9.-]+(:[0-9]+)?/?$`, "a Key Vault name such as my-vault, or its https URL"),
	ParamAzureClientID:    matches(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`, "an application (client) id, a GUID"),
	ParamAzureTenantID:    matches(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`, "a tenant id, a GUID (the vault's challenge names its tenant by id)"),
	ParamAzureAudience:    matches(`^[!-~]+$`, "an audience of the CSIDriver's tokenRequests"),
	ParamGCPProject:       matches(`^[a-z0-9][a-z0-9.:-]{0,127}$`, "a Google Cloud project id or number"),
	"secretProviderClass": func(string) error { return nil },
}

// Params lists the class parameters secretfs reads besides objects, sorted.
func Params() []string {
	var out []string
	for p := range params {
		if p != "secretProviderClass" {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func matches(expr, what string) func(string) error {
	re := regexp.MustCompile(expr)
	return func(v string) error {
		if !re.MatchString(v) {
			return fmt.Errorf("want %s", what)
		}
		return nil
	}
}

func checkURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return errors.New("want an http or https URL such as https://vault.example:8200")
	}
	return nil
}

// ParamError is a parameter of the request that is missing or wrong. Its
// message names the parameter; it never holds a token or a value.
type ParamError struct {
	Param   string
	Problem string
}

func (e *ParamError) Error() string { return fmt.Sprintf("parameter %s: %s", e.Param, e.Problem) }

func paramErr(param, format string, args ...any) error {
	return &ParamError{Param: param, Problem: fmt.Sprintf(format, args...)}
}

// Pod is who the volume is for.
type Pod struct {
	Name, Namespace, UID, ServiceAccount string
}

func (p Pod) String() string { return p.Namespace + "/" + p.Name }

// Object is one file of the volume: a reference, or a template.
type Object struct {
	Ref      resolver.Reference  // when Template is nil
	Template *templates.Template // a template of several references
	Path     string              // relative, clean
	Mode     os.FileMode         // permission bits
}

// What names the object's source for logs and errors: the reference, or
// "template PATH".
func (o Object) What() string {
	if o.Template != nil {
		return "template " + o.Path
	}
	return o.Ref.String()
}

// Request is one Mount call, parsed and checked.
type Request struct {
	Pod     Pod
	Objects []Object
	// Params holds the parameters of the params table that were set.
	Params map[string]string
	// Tokens are the pod's service-account tokens by audience.
	Tokens map[string]string
}

// object is an entry of the objects parameter, as written.
type object struct {
	Ref      string    `yaml:"ref"`
	Template string    `yaml:"template"`
	Path     string    `yaml:"path"`
	Mode     *modeText `yaml:"mode"`
}

// modeText is a mode written in octal, quoted or not ("0400", 0400, 400).
type modeText string

func (m *modeText) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("mode: want octal digits such as \"0400\"")
	}
	*m = modeText(n.Value)
	return nil
}

// ParseMount parses a MountRequest's attributes (the JSON the driver makes
// of the class's parameters and the pod's attributes) and permission (the
// driver's file mode, a JSON number such as "420"). The Request is never
// nil: on an error it holds what could be read of the pod, for the log.
func ParseMount(attributes, permission string) (*Request, error) {
	req, err := parseMount(attributes, permission)
	if err != nil && req == nil {
		req = &Request{}
	}
	return req, err
}

func parseMount(attributes, permission string) (*Request, error) {
	var attrs map[string]string
	if err := json.Unmarshal([]byte(attributes), &attrs); err != nil {
		return nil, paramErr("attributes", "not a JSON object of strings")
	}
	req := &Request{Params: make(map[string]string), Pod: Pod{
		Name: attrs[AttrPodName], Namespace: attrs[AttrPodNamespace], UID: attrs[AttrPodUID], ServiceAccount: attrs[AttrServiceAccount],
	}}
	defMode, err := parsePermission(permission)
	if err != nil {
		return req, err
	}
	for _, k := range []string{AttrPodNamespace, AttrServiceAccount} {
		if attrs[k] == "" {
			return req, paramErr(k, "missing: the driver sends it with every mount")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		v := attrs[k]
		if k == ParamObjects || strings.HasPrefix(k, attrPrefix) {
			continue
		}
		check, ok := params[k]
		if !ok {
			return req, paramErr(k, "unknown (secretfs reads %s and %s)", ParamObjects, strings.Join(Params(), ", "))
		}
		if v == "" {
			continue // as if not set
		}
		if len(v) > maxParamLength {
			return req, paramErr(k, "longer than %d bytes", maxParamLength)
		}
		if err := check(v); err != nil {
			return req, paramErr(k, "%q: %v", v, err)
		}
		req.Params[k] = v
	}
	if tok, ok := attrs[AttrTokens]; ok && tok != "" {
		var tokens map[string]struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal([]byte(tok), &tokens); err != nil {
			return req, paramErr(AttrTokens, "not the JSON the driver makes of the tokens")
		}
		req.Tokens = make(map[string]string, len(tokens))
		for aud, t := range tokens {
			if t.Token != "" {
				req.Tokens[aud] = t.Token
			}
		}
	}
	if req.Objects, err = parseObjects(attrs[ParamObjects], defMode); err != nil {
		return req, err
	}
	return req, nil
}

// parsePermission reads the driver's default file mode, a decimal number
// in JSON ("420" is 0644). Empty means 0644, the driver's own default.
func parsePermission(s string) (os.FileMode, error) {
	if s == "" {
		return 0o644, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || n > 0o777 {
		return 0, paramErr("permission", "%q: want a file mode as a decimal number, such as \"420\" for 0644", s)
	}
	return os.FileMode(n), nil
}

// parseObjects parses the objects parameter.
func parseObjects(text string, defMode os.FileMode) ([]Object, error) {
	if strings.TrimSpace(text) == "" {
		return nil, paramErr(ParamObjects, "missing: list the files, each with ref (or template) and path")
	}
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	var raw []object
	if err := dec.Decode(&raw); err != nil {
		return nil, paramErr(ParamObjects, "%v", yamlMessage(err))
	}
	if len(raw) == 0 {
		return nil, paramErr(ParamObjects, "empty: list the files, each with ref (or template) and path")
	}
	if len(raw) > MaxObjects {
		return nil, paramErr(ParamObjects, "%d entries, more than %d", len(raw), MaxObjects)
	}
	out := make([]Object, 0, len(raw))
	seen := make(map[string]int)
	for i, r := range raw {
		where := fmt.Sprintf("%s[%d]", ParamObjects, i)
		o := Object{Path: r.Path, Mode: defMode}
		if err := checkPath(r.Path); err != nil {
			return nil, paramErr(where+".path", "%q: %v", r.Path, err)
		}
		if j, ok := seen[r.Path]; ok {
			return nil, paramErr(where+".path", "%q: also the path of %s[%d]", r.Path, ParamObjects, j)
		}
		for p := range seen {
			if strings.HasPrefix(r.Path, p+"/") || strings.HasPrefix(p, r.Path+"/") {
				return nil, paramErr(where+".path", "%q: a file cannot also be a directory (%q)", r.Path, p)
			}
		}
		seen[r.Path] = i
		switch {
		case r.Ref != "" && r.Template != "":
			return nil, paramErr(where, "has both ref and template; give one")
		case r.Ref != "":
			ref, err := resolver.Parse(r.Ref)
			if err != nil {
				return nil, paramErr(where+".ref", "%v", err)
			}
			o.Ref = ref
		case len(r.Template) > MaxTemplate:
			return nil, paramErr(where+".template", "%d bytes, more than %d", len(r.Template), MaxTemplate)
		case r.Template != "":
			t, err := templates.ParseUntrusted(r.Path, where+".template", r.Template)
			if err != nil {
				return nil, paramErr(where+".template", "%v", err)
			}
			o.Template = t
		default:
			return nil, paramErr(where, "has neither ref nor template")
		}
		if r.Mode != nil {
			m, err := strconv.ParseUint(strings.TrimPrefix(string(*r.Mode), "0o"), 8, 32)
			if err != nil || m > 0o777 {
				return nil, paramErr(where+".mode", "%q: want octal permission bits such as \"0400\"", string(*r.Mode))
			}
			o.Mode = os.FileMode(m)
		}
		out = append(out, o)
	}
	return out, nil
}

// yamlMessage keeps yaml's message (it names lines and keys).
func yamlMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// checkPath applies the driver's rules (its atomic writer refuses the
// rest) and secretfs's: relative, clean, no "..", no name starting with
// ".." (the writer's own names).
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty")
	case path.IsAbs(p):
		return errors.New("absolute; want a path relative to the volume")
	case len(p) > maxPathLength:
		return fmt.Errorf("longer than %d bytes", maxPathLength)
	case path.Clean(p) != p || p == ".":
		return errors.New("not clean (no ./, //, trailing /)")
	}
	for _, name := range strings.Split(p, "/") {
		if name == ".." {
			return errors.New("contains ..")
		}
		if strings.HasPrefix(name, "..") {
			return errors.New("a name starts with .., which the driver's writer keeps for itself")
		}
		if len(name) > maxNameLength {
			return fmt.Errorf("a name is longer than %d bytes", maxNameLength)
		}
		if strings.ContainsRune(name, 0) {
			return errors.New("contains a NUL byte")
		}
	}
	return nil
}
