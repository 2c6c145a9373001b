// Command inventory says what a built secretfs binary carries, from the
// module metadata the Go linker writes into it (debug/buildinfo): a licence
// inventory of its modules, and an SPDX 2.3 SBOM.
//
//	go run ./internal/inventory licenses BINARY   module, version, licence (TSV)
//	go run ./internal/inventory sbom [-version V] BINARY   SPDX 2.3 JSON
//
// The SBOM's creation time is SOURCE_DATE_EPOCH when it is set (make
// release sets it to the commit's time), so that a rebuild writes the same
// file.
//
// A module's licence is read from the LICENSE/COPYING files of its copy in
// the module cache (go mod download) and identified with
// github.com/google/licensecheck. A module whose licence cannot be
// identified, is under the Business Source License, or is not one that
// may be shipped in a work under secretfs's own licence (Apache-2.0, the
// LICENSE file at the root; see compatible) fails both commands: a
// release must not carry any of them.
package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/google/licensecheck"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	version := ""
	if len(args) == 4 && args[1] == "-version" {
		version, args = args[2], []string{args[0], args[3]}
	}
	if len(args) != 2 || (args[0] != "licenses" && args[0] != "sbom") {
		return errors.New("usage: inventory licenses|sbom [-version V] BINARY")
	}
	bi, err := buildinfo.ReadFile(args[1])
	if err != nil {
		return err
	}
	mods, err := inventory(bi)
	if err != nil {
		return err
	}
	if args[0] == "licenses" {
		fmt.Fprintln(out, "module\tversion\tlicence")
		for _, m := range mods {
			fmt.Fprintf(out, "%s\t%s\t%s\n", m.Path, m.Version, m.Licence)
		}
		return nil
	}
	doc, err := sbom(args[1], version, bi, mods)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// module is one dependency linked into the binary.
type module struct {
	Path, Version, Sum string
	Licence            string // SPDX expression
}

// inventory lists the binary's dependencies with their licences, and the
// Go standard library.
func inventory(bi *buildinfo.BuildInfo) ([]module, error) {
	var out []module
	var problems []string
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		lic, err := licenceOf(d)
		if err == nil {
			err = compatibleWith(lic)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s@%s: %v", d.Path, d.Version, err))
		}
		out = append(out, module{Path: d.Path, Version: d.Version, Sum: d.Sum, Licence: lic})
	}
	out = append(out, module{Path: "std", Version: bi.GoVersion, Licence: "BSD-3-Clause"})
	if len(problems) > 0 {
		return out, errors.New(strings.Join(problems, "; "))
	}
	return out, nil
}

// Licence is secretfs's own licence, as in the LICENSE file at the root.
const Licence = "Apache-2.0"

// compatible are the licences a binary under Licence may carry: permissive
// ones, and MPL-2.0, whose copyleft is per file (the files of those
// modules stay under it, and their source is public).
var compatible = []string{"Apache-2.0", "MIT", "BSD-2-Clause", "BSD-3-Clause", "ISC", "MPL-2.0", "CC0-1.0", "Unlicense", "Zlib"}

// compatibleWith refuses a licence expression (IDs joined by AND) with a
// licence not in compatible.
func compatibleWith(expr string) error {
	for _, id := range strings.Split(expr, " AND ") {
		if !slices.Contains(compatible, id) {
			return fmt.Errorf("%s is not known to be compatible with %s", id, Licence)
		}
	}
	return nil
}

// licenceOf identifies a module's licence from its licence files.
func licenceOf(m *debug.Module) (string, error) {
	dir, err := moduleDir(m.Path, m.Version)
	if err != nil {
		return "", err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, e := range ents {
		up := strings.ToUpper(e.Name())
		if e.IsDir() || !(strings.HasPrefix(up, "LICENSE") || strings.HasPrefix(up, "LICENCE") || strings.HasPrefix(up, "COPYING")) {
			continue
		}
		text, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", err
		}
		if strings.Contains(string(text), "Business Source License") {
			return "BUSL-1.1", errors.New("under the Business Source License")
		}
		for _, match := range licensecheck.Scan(text).Match {
			if !match.IsURL && !slices.Contains(ids, match.ID) {
				ids = append(ids, match.ID)
			}
		}
	}
	if len(ids) == 0 {
		return "NOASSERTION", errors.New("no licence identified")
	}
	return strings.Join(ids, " AND "), nil
}

// moduleDir is the module's copy in the module cache, downloaded if need
// be.
func moduleDir(path, version string) (string, error) {
	out, err := exec.Command("go", "mod", "download", "-json", path+"@"+version).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download: %w", err)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download: %s", info.Error)
	}
	return info.Dir, nil
}

// SPDX 2.3, the fields used.
type spdxDoc struct {
	SPDXVersion       string        `json:"spdxVersion"`
	DataLicense       string        `json:"dataLicense"`
	SPDXID            string        `json:"SPDXID"`
	Name              string        `json:"name"`
	DocumentNamespace string        `json:"documentNamespace"`
	CreationInfo      spdxCreation  `json:"creationInfo"`
	Packages          []spdxPackage `json:"packages"`
	Relationships     []spdxRel     `json:"relationships"`
}

type spdxCreation struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	SPDXID           string         `json:"SPDXID"`
	Name             string         `json:"name"`
	VersionInfo      string         `json:"versionInfo,omitempty"`
	DownloadLocation string         `json:"downloadLocation"`
	FilesAnalyzed    bool           `json:"filesAnalyzed"`
	LicenseConcluded string         `json:"licenseConcluded"`
	LicenseDeclared  string         `json:"licenseDeclared"`
	CopyrightText    string         `json:"copyrightText"`
	PrimaryPurpose   string         `json:"primaryPackagePurpose,omitempty"`
	Checksums        []spdxChecksum `json:"checksums,omitempty"`
	ExternalRefs     []spdxRef      `json:"externalRefs,omitempty"`
	Comment          string         `json:"comment,omitempty"`
}

type spdxChecksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type spdxRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxRel struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// sbom describes the binary at path: the binary itself (its SHA-256), the
// modules linked into it and the standard library.
func sbom(path, version string, bi *buildinfo.BuildInfo, mods []module) (*spdxDoc, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	hexSum := hex.EncodeToString(sum[:])
	created := time.Now().UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err == nil {
			created = time.Unix(sec, 0).UTC()
		}
	}
	name := filepath.Base(path)
	if version == "" {
		version = bi.Main.Version // "(devel)" unless built by go install
	}
	doc := &spdxDoc{SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT", Name: name,
		DocumentNamespace: "https://github.com/secretfs/secretfs/spdx/" + name + "-" + hexSum,
		CreationInfo:      spdxCreation{Created: created.Format(time.RFC3339), Creators: []string{"Tool: secretfs-inventory"}}}
	root := spdxPackage{SPDXID: "SPDXRef-Package-secretfs", Name: bi.Main.Path, VersionInfo: version,
		DownloadLocation: "NOASSERTION", LicenseConcluded: Licence, LicenseDeclared: Licence, CopyrightText: "NOASSERTION",
		PrimaryPurpose: "APPLICATION", Checksums: []spdxChecksum{{Algorithm: "SHA256", Value: hexSum}},
		Comment: "the binary " + name + ", built with " + bi.GoVersion}
	doc.Packages = append(doc.Packages, root)
	doc.Relationships = append(doc.Relationships, spdxRel{"SPDXRef-DOCUMENT", "DESCRIBES", root.SPDXID})
	for i, m := range mods {
		p := spdxPackage{SPDXID: fmt.Sprintf("SPDXRef-Package-%d", i), Name: m.Path, VersionInfo: m.Version,
			DownloadLocation: "https://proxy.golang.org/" + m.Path + "/@v/" + m.Version + ".zip",
			LicenseConcluded: m.Licence, LicenseDeclared: "NOASSERTION", CopyrightText: "NOASSERTION", PrimaryPurpose: "LIBRARY",
			ExternalRefs: []spdxRef{{"PACKAGE-MANAGER", "purl", "pkg:golang/" + m.Path + "@" + m.Version}}}
		if m.Path == "std" {
			p.Name, p.DownloadLocation = "go standard library", "https://go.dev/dl/"
			p.ExternalRefs = []spdxRef{{"PACKAGE-MANAGER", "purl", "pkg:golang/stdlib@" + strings.TrimPrefix(m.Version, "go")}}
		}
		if m.Sum != "" {
			p.Comment = "go.sum " + m.Sum
		}
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, spdxRel{root.SPDXID, "DEPENDS_ON", p.SPDXID})
	}
	return doc, nil
}
