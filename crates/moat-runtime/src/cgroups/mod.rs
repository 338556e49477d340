//! cgroups (filled in by a helper)
