//! `buildbot`: the build worker binary.

fn main() {}
