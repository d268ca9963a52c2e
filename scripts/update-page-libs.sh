#!/usr/bin/env bash
# Updates the libraries the built-in page embeds (src/page-libs/): marked (Markdown),
# DOMPurify (sanitising what marked makes) and highlight.js's common-languages browser
# build (code blocks), fetched from npm at the versions pinned below (or given), each
# with its licence. The page inlines them (src/web.rs), so each file is made safe to
# stand inside a <script> element: no `<!--`, `<script` or `</script` (written
# `\x3C…`, the same character in the regular expressions and strings they appear in),
# no source-map comment; then checked to parse. Rewrites src/page-libs/THIRD-PARTY.md.
#
# Usage: scripts/update-page-libs.sh [MARKED_VERSION [DOMPURIFY_VERSION [HIGHLIGHT_VERSION]]]
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail

MARKED="${1:-18.3.0}"
DOMPURIFY="${2:-3.5.0}"
HIGHLIGHT="${3:-11.12.0}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/src/page-libs"
for tool in npm node tar; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found on PATH (Node.js ships npm and node)" >&2
        exit 1
    fi
done
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# package@version, the file taken from it, its name here, and the licence files.
fetch() {
    local spec="$1" name="$2"
    echo "fetching $spec ..." >&2
    (cd "$WORK" && npm pack --silent "$spec" >"$name.tgz.name")
    mkdir -p "$WORK/$name"
    tar xzf "$WORK/$(cat "$WORK/$name.tgz.name")" -C "$WORK/$name"
}
fetch "marked@$MARKED" marked
fetch "dompurify@$DOMPURIFY" dompurify
fetch "@highlightjs/cdn-assets@$HIGHLIGHT" highlight

# Inline-safe copies, each checked to still parse as a script.
node - "$OUT" \
    "$WORK/marked/package/lib/marked.umd.js" marked.js \
    "$WORK/dompurify/package/dist/purify.min.js" purify.js \
    "$WORK/highlight/package/highlight.min.js" highlight.js <<'JS'
const fs = require("fs");
const [out, ...pairs] = process.argv.slice(2);
for (let i = 0; i < pairs.length; i += 2) {
  let src = fs.readFileSync(pairs[i], "utf8");
  src = src.replace(/^\/\/# sourceMappingURL=.*$/gm, "");
  src = src.replace(/<(!--|\/?script)/gi, (_, rest) => "\\x3C" + rest);
  if (/<!--|<\/?script/i.test(src)) throw new Error(pairs[i] + ": still holds a tag opener");
  new Function(src); // throws on a syntax error
  fs.writeFileSync(out + "/" + pairs[i + 1], src.trimEnd() + "\n");
}
JS

{
    cat <<MD
# Third-party code in the built-in page

The page (src/page.html, served at \`GET /\`) inlines these libraries, vendored here by
\`scripts/update-page-libs.sh\` from npm, unmodified except that \`<!--\`, \`<script\` and
\`</script\` are written \`\\x3C…\` (so they can stand inside a \`<script>\` element) and the
source-map comment is dropped.

| file | package | version | licence |
|---|---|---|---|
| marked.js | marked (lib/marked.umd.js) | $MARKED | MIT |
| purify.js | dompurify (dist/purify.min.js) | $DOMPURIFY | Apache-2.0 or MPL-2.0 (used under Apache-2.0) |
| highlight.js | @highlightjs/cdn-assets (highlight.min.js, the common languages) | $HIGHLIGHT | BSD-3-Clause |

Their licences follow, as each package ships them.
MD
    for pair in "marked:marked/package/LICENSE" "DOMPurify:dompurify/package/LICENSE" \
        "highlight.js:highlight/package/LICENSE"; do
        printf '\n## %s\n\n```text\n' "${pair%%:*}"
        cat "$WORK/${pair#*:}"
        printf '```\n'
    done
} >"$OUT/THIRD-PARTY.md"

ls -l "$OUT" >&2
echo "$OUT"
