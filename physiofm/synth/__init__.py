"""Layout-exact generators of the archives physiofm reads (for tests and demos)."""
