#!/bin/sh
# help-for-man.sh SUBCOMMAND OPTION COMMAND... - runs `COMMAND SUBCOMMAND
# OPTION` (the deltaslice binary, maybe behind an emulator) and rewrites its
# --help the way help2man reads it: "Usage:" and capitalised headings
# ("Options:") become SYNOPSIS and OPTIONS, a usage line's indented
# "[options]" continuation joins it, a second synopsis line gets "or:".
sub=$1 opt=$2
shift 2
out=$("$@" ${sub:+"$sub"} "$opt") || exit $?
printf '%s\n' "$out" | awk '
  NR == 1 && sub(/^usage:/, "Usage:") { usage = 1; line = $0; next }
  usage && /^[ \t]+\[/ { sub(/^[ \t]+/, " "); line = line $0; next }
  usage && /^[ \t]+deltaslice / { print line; sub(/^[ \t]+/, "  or: "); line = $0; next }
  usage { print line; usage = 0 }
  /^[a-z][a-z ]*:$/ { $0 = toupper(substr($0, 1, 1)) substr($0, 2) }
  { print }
  END { if (usage) print line }'
