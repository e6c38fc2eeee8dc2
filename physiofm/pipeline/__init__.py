"""Readers, preprocessing, writers, manifests and the build orchestrator."""
