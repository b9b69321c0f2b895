# Placeholder: the worker's own image (multi-stage build, small non-root
# runtime image with only the `buildbot` binary) is not written yet; it is
# part of the packaging issue. Until then, build the binary with
# `cargo build --release -p buildbot-worker` and run `buildbot worker` on a
# host with access to the Docker socket.
