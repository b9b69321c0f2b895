//! `.dockerignore` patterns with Docker's semantics.
