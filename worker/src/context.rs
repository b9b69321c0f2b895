//! Build context: the tar stream sent to the Docker daemon, built from the
//! checkout with `.dockerignore` applied and no symlink followed out of it.
