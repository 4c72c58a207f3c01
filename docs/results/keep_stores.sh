#!/usr/bin/env bash
# Keeps the finished chunks of long measurement runs across sessions.
#
#   bash docs/results/keep_stores.sh save      # runs/ -> docs/results/stores/
#   bash docs/results/keep_stores.sh restore   # docs/results/stores/ -> runs/
#
# A run's inversion store (runs/<run>/arms/<arm>/state: run.json and one
# orbax checkpoint per finished chunk of 8 targets, ~150 kB each) is all a
# rerun of the same command needs to skip the finished chunks (the store
# refuses to resume a different run). Only finished chunks are kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?save or restore}
kept=docs/results/stores
case "$mode" in
  save)
    for state in runs/*/arms/*/state runs/*/transfer/*/state; do
      [ -f "$state/run.json" ] || continue
      dst="$kept/${state#runs/}"
      mkdir -p "$dst/chunks"
      cp "$state/run.json" "$dst/"
      [ -d "$state/chunks" ] && cp -r "$state/chunks/." "$dst/chunks/"
      # orbax notes the absolute path it wrote to; nothing reads it back.
      find "$dst" -name commit_success.txt -exec sh -c 'echo ok > "$1"' _ {} \;
      echo "kept $(ls "$dst/chunks" | wc -l) chunk(s) of $state"
    done ;;
  restore)
    [ -d "$kept" ] || { echo "nothing kept in $kept"; exit 0; }
    for run_json in $(find "$kept" -name run.json); do
      src=$(dirname "$run_json")
      dst="runs/${src#$kept/}"
      mkdir -p "$dst"
      cp -rn "$src/." "$dst/"
      echo "restored $(ls "$dst/chunks" | wc -l) chunk(s) into $dst"
    done ;;
  *) echo "usage: $0 save|restore" >&2; exit 2 ;;
esac
