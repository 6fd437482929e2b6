#!/usr/bin/env bash
# Re-vendor OpenSeadragon (BSD-3-Clause) from the npm registry into the package's static
# files: the built script, its navigation images and its licence. Nothing is fetched at
# run time; bump OSD_VERSION and run this to update.
set -euo pipefail
OSD_VERSION=6.1.1
dest="$(dirname "$0")/../cbir/serve/static/openseadragon"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "openseadragon@$OSD_VERSION" >/dev/null && tar xzf ./*.tgz)
rm -rf "$dest" && mkdir -p "$dest"
cp "$work/package/build/openseadragon/openseadragon.min.js" "$dest/"
cp -r "$work/package/build/openseadragon/images" "$dest/"
cp "$work/package/LICENSE.txt" "$dest/LICENSE.txt"
echo "openseadragon $OSD_VERSION (npm), BSD-3-Clause; see LICENSE.txt" > "$dest/VERSION"
echo "vendored openseadragon $OSD_VERSION into $dest"
