#compdef projctl

_projctl_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _PROJCTL_COMPLETE=complete_zsh projctl)
}

compdef _projctl_completion projctl
