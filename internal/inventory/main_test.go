package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// The test binary carries licensecheck (BSD-3-Clause): the inventory and
// the SBOM of that binary say so.
func TestInventoryOfThisTestBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"licenses", self}, &out); err != nil {
		t.Fatalf("licenses: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "github.com/google/licensecheck\tv0.3.1\tBSD-3-Clause\n") {
		t.Errorf("licenses = %q, want licensecheck as BSD-3-Clause", out.String())
	}
	out.Reset()
	if err := run([]string{"sbom", "-version", "v9.9.9", self}, &out); err != nil {
		t.Fatal(err)
	}
	var doc spdxDoc
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || len(doc.Packages) < 3 || len(doc.Relationships) != len(doc.Packages) {
		t.Errorf("sbom: version %q, %d packages, %d relationships", doc.SPDXVersion, len(doc.Packages), len(doc.Relationships))
	}
	if doc.Packages[0].VersionInfo != "v9.9.9" {
		t.Errorf("the binary's version = %q, want v9.9.9", doc.Packages[0].VersionInfo)
	}
	if sum := doc.Packages[0].Checksums; len(sum) != 1 || len(sum[0].Value) != 64 {
		t.Errorf("the binary's checksum = %v", sum)
	}
	if err := run([]string{"sbom"}, &out); err == nil {
		t.Error("no binary: no error")
	}
}
