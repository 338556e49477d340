//! seccomp (filled in by a helper)
