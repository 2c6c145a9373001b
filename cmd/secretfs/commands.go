package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// command is one subcommand: how it is called, what it does, its flags (for
// --help, the manual page and completion) and how it runs.
type command struct {
	name, args, summary string
	// flags returns a fresh set of the command's flags; nil: it has none.
	flags func() *pflag.FlagSet
	// complete says what its arguments are, for shell completion: "dir",
	// "file", "mountpoint" (running secretfs mounts), "ref"
	// (PROVIDER:...), or words separated by spaces.
	complete string
	run      func(args []string, stdout, stderr io.Writer) error
	hidden   bool // mount-helper: reached through mount(8), not typed
}

// commands lists the subcommands in the order --help shows them.
func commands() []command {
	common := func(name string) func() *pflag.FlagSet {
		return func() *pflag.FlagSet { return newCommon(name).flagSet }
	}
	return []command{
		{name: "mount", args: "[flags] MOUNTPOINT", summary: "mount; cat MOUNTPOINT/PROVIDER/KEY[@VERSION][#FIELD]",
			flags: func() *pflag.FlagSet { return newMountFlags().flagSet }, complete: "dir", run: runMount},
		{name: "get", args: "[flags] REF", summary: "print one secret: PROVIDER:KEY[@VERSION][#FIELD]",
			flags: common("get"), complete: "ref", run: runGet},
		{name: "ls", args: "[flags] PROVIDER:[DIR]", summary: "list what a provider holds",
			flags: common("ls"), complete: "ref", run: runLs},
		{name: "exec", args: "[flags] -- COMMAND [ARG...]", summary: "run a command with secrets in its environment",
			flags: func() *pflag.FlagSet { return newExecCmd().flagSet }, complete: "file", run: runExec},
		{name: "status", args: "MOUNTPOINT", summary: "what a running mount is doing", complete: "mountpoint", run: runStatus},
		{name: "check-access", args: "PATH --uid N", summary: "which access rule decides for a caller, and why",
			flags: func() *pflag.FlagSet { return newCheckAccessFlags().set }, run: runCheckAccess},
		{name: "render", args: "[flags] FILE", summary: "render a template once, without mounting",
			flags: common("render"), complete: "file", run: runRender},
		{name: "refresh", args: "MOUNTPOINT REF...", summary: "re-fetch secrets now (PROVIDER:DIR/ for a directory)",
			complete: "mountpoint", run: runRefresh},
		{name: "csi-provider", args: "--endpoint SOCK", summary: "serve the Kubernetes Secrets Store CSI driver",
			flags: func() *pflag.FlagSet { return newCSIFlags().flagSet }, run: runCSI},
		{name: "serve", args: "docker [flags]", summary: "serve Docker volumes (a volume plugin)",
			flags: func() *pflag.FlagSet { return newDockerFlags().flagSet }, complete: "docker", run: runServe},
		{name: "completion", args: "bash|zsh", summary: "print a shell completion script", complete: "bash zsh", run: runCompletion},
		{name: "man", summary: "print the manual page (roff)", run: runMan},
		{name: "version", summary: "print the version, commit, Go version and providers", run: func(_ []string, stdout, _ io.Writer) error {
			fmt.Fprint(stdout, versionText())
			return nil
		}},
		{name: "mount-helper", args: "SOURCE MOUNTPOINT -o OPTIONS", summary: "mount(8) helper (mount.fuse.secretfs)", run: runHelper, hidden: true},
	}
}

// flagNames lists a set's flags as --name (and -x), sorted.
func flagNames(set *pflag.FlagSet) []string {
	var out []string
	set.VisitAll(func(f *pflag.Flag) {
		out = append(out, "--"+f.Name)
		if f.Shorthand != "" {
			out = append(out, "-"+f.Shorthand)
		}
	})
	slices.Sort(out)
	return append(out, "--help")
}

func runCompletion(args []string, stdout, _ io.Writer) error {
	if len(args) != 1 {
		return usagef("completion takes one shell: bash or zsh")
	}
	switch args[0] {
	case "bash":
		fmt.Fprint(stdout, bashCompletion("_secretfs"))
	case "zsh":
		// zsh runs the bash function through bashcompinit. Sourced, the
		// complete line registers it with compdef; installed in $fpath as
		// _secretfs, the file is the completion function, and its last
		// line hands over to the bash one.
		fmt.Fprint(stdout, "#compdef secretfs\n# zsh completion for secretfs: put it in a directory of $fpath as _secretfs,\n# or source it after compinit.\nautoload -U +X bashcompinit && bashcompinit\n",
			bashCompletion("__secretfs_bash"),
			"[[ ${zsh_eval_context[-1]} == loadautofunc ]] && _bash_complete -F __secretfs_bash \"$@\"\n")
	default:
		return usagef("completion: unknown shell %q (want bash or zsh)", args[0])
	}
	return nil
}

// bashCompletion is a completion function registered with complete -F: the
// commands, each command's flags, the providers of this binary (for
// --providers and references) and, for status and refresh, the mountpoints
// of running secretfs mounts.
func bashCompletion(fn string) string {
	var cmds, cases strings.Builder
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		cmds.WriteString(c.name + " ")
		var flags []string
		if c.flags != nil {
			flags = flagNames(c.flags())
		} else {
			flags = []string{"--help"}
		}
		fmt.Fprintf(&cases, "\t\t%s) flags=%q; args=%q ;;\n", c.name, strings.Join(flags, " "), c.complete)
	}
	return fmt.Sprintf(`# bash completion for secretfs (secretfs completion bash)
# Install: secretfs completion bash > /usr/share/bash-completion/completions/secretfs
_secretfs_mountpoints() {
	awk '$3 == "fuse.secretfs" { gsub(/\\040/, " ", $2); print $2 }' /proc/mounts 2>/dev/null
}

%[1]s() {
	local cur prev cmd flags args IFS=$' \t\n'
	cur="${COMP_WORDS[COMP_CWORD]}"
	prev="${COMP_WORDS[COMP_CWORD-1]}"
	# --flag=value: bash splits the words at "=".
	if [[ "$prev" == "=" && $COMP_CWORD -ge 2 ]]; then
		prev="${COMP_WORDS[COMP_CWORD-2]}"
	elif [[ "$cur" == "=" ]]; then
		prev="${COMP_WORDS[COMP_CWORD-1]}"; cur=""
	fi
	COMPREPLY=()
	if [[ $COMP_CWORD -eq 1 ]]; then
		COMPREPLY=($(compgen -W %[2]q -- "$cur"))
		return 0
	fi
	cmd="${COMP_WORDS[1]}"
	case "$cmd" in
%[3]s		*) return 0 ;;
	esac
	case "$prev" in
		--providers)
			local done="${cur%%,*}" last="${cur##*,}"
			[[ "$cur" == *,* ]] || done=""
			[[ -n "$done" ]] && done="$done,"
			COMPREPLY=($(compgen -P "$done" -W %[4]q -- "$last"))
			return 0 ;;
		--config|--log-file|--audit-log|--template|--exe)
			COMPREPLY=($(compgen -f -- "$cur"))
			return 0 ;;
		--log-level) COMPREPLY=($(compgen -W "debug info warn error" -- "$cur")); return 0 ;;
		--log-format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return 0 ;;
	esac
	if [[ "$cur" == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
		return 0
	fi
	case "$args" in
		dir) COMPREPLY=($(compgen -d -- "$cur")) ;;
		file) COMPREPLY=($(compgen -f -- "$cur")) ;;
		ref) COMPREPLY=($(compgen -W %[5]q -- "$cur")); compopt -o nospace 2>/dev/null ;;
		mountpoint)
			local m
			while IFS= read -r m; do
				[[ "$m" == "$cur"* ]] && COMPREPLY+=("$m")
			done < <(_secretfs_mountpoints) ;;
		"") ;;
		*) COMPREPLY=($(compgen -W "$args" -- "$cur")) ;;
	esac
	return 0
}
complete -F %[1]s secretfs
`, fn, strings.TrimSpace(cmds.String()), cases.String(), strings.Join(compiledNames(), " "), refPrefixes())
}

// refPrefixes are "PROVIDER:" for each provider of this binary.
func refPrefixes() string {
	var out []string
	for _, n := range compiledNames() {
		out = append(out, n+":")
	}
	return strings.Join(out, " ")
}

func runMan(args []string, stdout, _ io.Writer) error {
	if len(args) != 0 {
		return usagef("man takes no arguments")
	}
	fmt.Fprint(stdout, manPage(time.Now()))
	return nil
}

// manPage is secretfs(1) in roff, generated from the commands and their
// flag definitions.
func manPage(now time.Time) string {
	var b strings.Builder
	esc := func(s string) string {
		s = strings.ReplaceAll(s, `\`, `\e`)
		s = strings.ReplaceAll(s, "-", `\-`)
		if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
			s = `\&` + s
		}
		return s
	}
	fmt.Fprintf(&b, ".TH SECRETFS 1 %q %q \"User Commands\"\n", now.Format("2006-01-02"), "secretfs "+version())
	b.WriteString(".SH NAME\nsecretfs \\- mount secrets as files\n")
	b.WriteString(".SH SYNOPSIS\n")
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(&b, ".B secretfs %s\n%s\n.br\n", esc(c.name), esc(c.args))
		}
	}
	b.WriteString(`.SH DESCRIPTION
secretfs mounts secrets as read-only files: MOUNTPOINT/PROVIDER/KEY[@VERSION][#FIELD]
reads the secret KEY of PROVIDER (at VERSION, cut to the JSON FIELD).
Values are kept in memory for a TTL, refreshed ahead of expiry, and served
stale within \-\-max\-stale while a backend is unavailable.
.PP
Every flag can also be set in the environment as SECRETFS_<FLAG>
(SECRETFS_TTL=1m), or in the YAML file of \-\-config, whose keys are the long
flag names; the command line wins over the environment, which wins over the file.
`)
	fmt.Fprintf(&b, ".PP\nProviders in this binary: %s; and exec providers (\\-\\-exec\\-provider).\n", esc(strings.Join(compiledNames(), ", ")))
	b.WriteString(".SH COMMANDS\n")
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		fmt.Fprintf(&b, ".SS %s\n%s\n", esc("secretfs "+c.name+" "+c.args), esc(c.summary))
		if c.flags == nil {
			continue
		}
		c.flags().VisitAll(func(f *pflag.Flag) {
			name, typ := f.Name, f.Value.Type()
			b.WriteString(".TP\n.B \\-\\-" + esc(name))
			if f.Shorthand != "" {
				b.WriteString(", \\-" + esc(f.Shorthand))
			}
			if typ != "bool" {
				b.WriteString(" \\fI" + esc(typ) + "\\fR")
			}
			b.WriteString("\n" + esc(f.Usage))
			if def := f.DefValue; def != "" && def != "false" && def != "[]" && def != "0" {
				b.WriteString(" (default: " + esc(def) + ")")
			}
			b.WriteString("\n")
		})
	}
	b.WriteString(`.SH EXIT STATUS
0 ok, 1 error, 2 usage, 3 not found, 4 invalid reference or unknown provider,
5 permission denied, 6 backend unavailable.
.SH FILES
.TP
/etc/fstab
mount with type fuse.secretfs through mount.fuse.secretfs.
.SH LICENSE
Apache-2.0 (SPDX identifier): the Apache License, Version 2.0. The modules
a binary carries are under Apache-2.0, MIT, BSD-3-Clause or MPL-2.0
.RB ( "make licenses" ).
.SH SEE ALSO
.BR mount (8),
.BR fusermount3 (1),
.BR systemd.mount (5)
`)
	return b.String()
}
