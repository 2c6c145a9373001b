package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// buildVersion and buildCommit are set with -ldflags "-X main.buildVersion=…
// -X main.buildCommit=…": make build and make release stamp them from git
// (go's own VCS stamp is used where they are not, unless -buildvcs=false).
var buildVersion, buildCommit = "", ""

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// versionText is what `secretfs version` prints: the version, the commit
// the Go toolchain stamped (vcs.revision; "+dirty" for uncommitted
// changes), the Go version and the providers compiled in.
func versionText() string {
	commit, dirty := buildCommit, ""
	goVersion := runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && commit == "":
				commit = s.Value
			case s.Key == "vcs.modified" && s.Value == "true" && buildCommit == "":
				dirty = "+dirty"
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("secretfs %s\ncommit: %s%s\ngo: %s\nproviders: %s\n",
		version(), commit, dirty, goVersion, strings.Join(compiledNames(), ", "))
}
