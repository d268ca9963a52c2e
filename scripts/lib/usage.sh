# Sourced first thing by every script in scripts/: `--help` or `-h` as the first argument
# prints the script's header comment (its purpose and its Usage: line) and exits 0,
# before the script does anything else.
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
case "${1:-}" in
-h | --help)
    # The header: the comment lines after the shebang, up to the first line that is not
    # a comment (this file's `.` line).
    sed -n '2,${/^#/!q;s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
esac
