"""Tabulation of embedding nets into fifth-order (quintic Hermite) polynomial tables."""
