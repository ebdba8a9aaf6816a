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
		var dashed []string
		for _, f := range flags {
			dashed = append(dashed, "--"+f)
		}
		fmt.Fprintf(out, `# bash completion for podnetctl
_podnetctl() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	case $prev in
	-o) COMPREPLY=($(compgen -W "table json" -- "$cur")); return ;;
	--socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	completion) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")); return ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "%s -o" -- "$cur"))
	else
		COMPREPLY=($(compgen -W "%s" -- "$cur"))
	fi
}
complete -F _podnetctl podnetctl
`, strings.Join(dashed, " "), strings.Join(cmds, " "))
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
		fmt.Fprintln(out, "\t\t'1:command:->cmd' '*::arg:->args'\n\tcase $state in\n\tcmd) _describe command cmds ;;\n\targs) [[ $words[1] == completion ]] && _values shell bash zsh fish ;;\n\tesac\n}\ncompdef _podnetctl podnetctl")
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
			if f.Name == "o" {
				opt = "-s o -x -a 'table json'"
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
