//! Clone step: fetch exactly one revision with git2, credentials in memory.
