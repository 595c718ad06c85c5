"""Sharing studies with receiving institutions and users."""
