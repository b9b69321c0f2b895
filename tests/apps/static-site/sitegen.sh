#!/bin/sh
# A tiny static site generator: one HTML page per SRC/*.txt into OUT,
# titled with $SITE_TITLE. Needs its toolchain, which only the builder
# image has.
set -e
src=$1
out=$2
test -f /opt/sitegen/toolchain.bin
mkdir -p "$out"
for page in "$src"/*.txt; do
  name=$(basename "$page" .txt)
  {
    echo "<html><head><title>$SITE_TITLE</title></head><body>"
    sed 's/^/<p>/' "$page"
    echo "</body></html>"
  } > "$out/$name.html"
  echo "generated $name.html"
done
