# bash completion for rpc-call(1) and rpc-dlq(1): options, -o with every
# configuration key (rpc-call -K lists them), the methods of the services
# warren ships, and rpc-dlq's commands. Installed in
# share/bash-completion/completions/.

_warren_methods="example.echo example.sleep example.fail example.flaky user.get user.list
user.create user.update user.delete user.preferences.get user.preferences.set"

# The configuration keys starting with $1, each followed by "=".
_warren_keys() {
	mapfile -t COMPREPLY < <(compgen -W "$(rpc-call -K 2>/dev/null | sed 's/$/=/')" -- "$1")
	compopt -o nospace 2>/dev/null
}

_rpc_call() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
	COMPREPLY=()
	case $prev in
	-o | --option)
		_warren_keys "$cur"
		return 0
		;;
	-c | --config)
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		return 0
		;;
	-t | -m | -n | -P | --timeout | --message-id | --count | --in-flight)
		return 0
		;;
	esac
	if [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "-c -o -t -m -j -T -1 -v -b -n -P -h -V -K
			--config --option --timeout --message-id --json --transient --one-way --verbose
			--batch --count --in-flight --help --version" -- "$cur")
	else
		mapfile -t COMPREPLY < <(compgen -W "$_warren_methods" -- "$cur")
	fi
}

_rpc_dlq() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
	COMPREPLY=()
	case $prev in
	-o | --option)
		_warren_keys "$cur"
		return 0
		;;
	list | show | replay | purge | export | import)
		mapfile -t COMPREPLY < <(compgen -W "user example" -- "$cur")
		return 0
		;;
	esac
	if [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "-c -o --method --reason --older-than --newer-than -n --dry-run --yes
			-h -V --config --option --count --help --version" -- "$cur")
	else
		mapfile -t COMPREPLY < <(compgen -W "list show replay purge export import" -- "$cur")
	fi
}

complete -F _rpc_call rpc-call
complete -F _rpc_dlq rpc-dlq
