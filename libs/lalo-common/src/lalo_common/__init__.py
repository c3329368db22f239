"""Shared plumbing for LALO services: settings base, logging, gRPC factories, auth primitives."""
