"""Shared plumbing for the mesh's gRPC services: auth, errors, settings, server and client helpers."""
