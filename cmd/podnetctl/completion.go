package main

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// completion writes a completion script for shell, listing the commands and
// flags as they are defined (nothing to keep in step by hand). Install:
//
//	bash: podnetctl completion bash > /etc/bash_completion.d/podnetctl
//	zsh:  podnetctl completion zsh > "${fpath[1]}/_podnetctl"
//	fish: podnetctl completion fish > ~/.config/fish/completions/podnetctl.fish
func completion(out io.Writer, shell string, fs *flag.FlagSet) error {
	cmds := append(slices.Sorted(maps.Keys(commands)), "completion")
	var flags []string
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f.Name) })
	switch shell {
	case "bash":
		var dashed, valued []string
		fs.VisitAll(func(f *flag.Flag) {
			name := "--" + f.Name
			if f.Name == "o" {
				name = "-o"
			}
			dashed = append(dashed, name)
			if !isBool(f) {
				valued = append(valued, name)
			}
		})
		fmt.Fprintf(out, `# bash completion for podnetctl
_podnetctl() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} w i have=""
	case $prev in
	-o) COMPREPLY=($(compgen -W "table json" -- "$cur")); return ;;
	--socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	completion) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")); return ;;
	%s) COMPREPLY=(); return ;;
	esac
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		case " %s " in *" $w "*) have=$w ;; esac
	done
	if [[ $cur == -* || -n $have ]]; then
		COMPREPLY=($(compgen -W "%s" -- "$cur"))
	else
		COMPREPLY=($(compgen -W "%s" -- "$cur"))
	fi
}
complete -F _podnetctl podnetctl
`, strings.Join(valued, "|"), strings.Join(cmds, " "), strings.Join(dashed, " "), strings.Join(cmds, " "))
	case "zsh":
		fmt.Fprintln(out, "#compdef podnetctl\n# zsh completion for podnetctl\n_podnetctl() {\n\tlocal -a cmds\n\tcmds=(")
		for _, c := range cmds {
			help := "print a shell completion script"
			if cmd, ok := commands[c]; ok {
				help = cmd.help
			}
			fmt.Fprintf(out, "\t\t'%s:%s'\n", c, strings.ReplaceAll(help, "'", ""))
		}
		fmt.Fprintln(out, "\t)\n\t_arguments \\")
		fs.VisitAll(func(f *flag.Flag) {
			name := "--" + f.Name
			if f.Name == "o" {
				name = "-o"
			}
			fmt.Fprintf(out, "\t\t'%s[%s]%s' \\\n", name, strings.NewReplacer("'", "", "[", "(", "]", ")").Replace(f.Usage), zshArg(f))
		})
		fmt.Fprintln(out, "\t\t'1:command:->cmd' '*::arg:->args'\n\tcase $state in\n\tcmd) _describe command cmds ;;\n\targs) [[ $words[1] == completion ]] && _values shell bash zsh fish ;;\n\tesac\n}")
		// Autoloaded from $fpath the file is the function's body: run it;
		// sourced, register it.
		fmt.Fprintln(out, "if [ \"$funcstack[1]\" = \"_podnetctl\" ]; then\n\t_podnetctl \"$@\"\nelse\n\tcompdef _podnetctl podnetctl\nfi")
	case "fish":
		fmt.Fprintln(out, "# fish completion for podnetctl")
		for _, c := range cmds {
			help := "print a shell completion script"
			if cmd, ok := commands[c]; ok {
				help = cmd.help
			}
			fmt.Fprintf(out, "complete -c podnetctl -f -n __fish_use_subcommand -a %s -d %q\n", c, help)
		}
		fmt.Fprintln(out, "complete -c podnetctl -f -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'")
		fs.VisitAll(func(f *flag.Flag) {
			opt := "-l " + f.Name
			switch {
			case f.Name == "o":
				opt = "-s o -x -a 'table json'"
			case f.Name == "socket":
				opt += " -r -F"
			case !isBool(f):
				opt += " -x"
			}
			fmt.Fprintf(out, "complete -c podnetctl %s -d %q\n", opt, f.Usage)
		})
	default:
		return fmt.Errorf("completion %q: want bash, zsh or fish", shell)
	}
	return nil
}

func zshArg(f *flag.Flag) string {
	switch f.Name {
	case "o":
		return ":format:(table json)"
	case "socket":
		return ":socket:_files"
	case "no-probe":
		return ""
	}
	return ":" + f.Name + ":"
}

// isBool: the flag takes no value.
func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
