#!/usr/bin/env bash
# get_corpus.sh OUT.txt — the King James Bible (public domain) as plain text, from Debian's
# bible-kjv package: one verse per line, verse references stripped, a blank line between
# chapters. About 4.3 MB, 31102 verses.
#
#   tools/get_corpus.sh data/kjv.txt
#   build/bin/prepare_data --text data/kjv.txt --out data/kjv --vocab-size 2048
set -euo pipefail

if [[ $# -ne 1 || "$1" == -* ]]; then
  echo "usage: $0 OUT.txt   (writes the KJV Bible as plain text)" >&2
  exit 2
fi
out=$1

if ! command -v bible > /dev/null 2>&1; then
  echo "get_corpus.sh: error: the 'bible' program is missing; install it with:" >&2
  echo "    sudo apt-get install bible-kjv" >&2
  exit 1
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT

# `bible -f` prints "Ge1:1 In the beginning ..." per verse; a verse too long for the line width
# continues on lines that do not start with a reference (seen on a terminal), so those are
# joined back onto their verse. A new book/chapter prefix starts a paragraph (blank line).
COLUMNS=100000 bible -f "Gen1:1-Rev22:21" | awk '
  function flush() { if (verse != "") print verse; verse = "" }
  { sub(/\r$/, "") }
  match($0, /^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ /) {
    ref = substr($0, 1, RLENGTH - 1)
    chapter = ref; sub(/:[0-9]+$/, "", chapter)
    flush()
    if (prev != "" && chapter != prev) print ""
    prev = chapter
    verse = substr($0, RLENGTH + 1)
    next
  }
  /^[ \t]*$/ { next }
  { line = $0; sub(/^[ \t]+/, "", line); verse = verse " " line }
  END { flush() }
' > "$tmp"

verses=$(grep -c . "$tmp" || true)
if [[ "$verses" -lt 31000 ]]; then
  echo "get_corpus.sh: error: expected about 31102 verses from 'bible', got $verses; is the" >&2
  echo "bible-kjv package complete? (apt-get install --reinstall bible-kjv)" >&2
  exit 1
fi
mv "$tmp" "$out"
trap - EXIT
echo "get_corpus.sh: wrote $out ($(wc -c < "$out") bytes, $verses verses)" >&2
