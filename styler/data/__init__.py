"""Datasets: import, validation, preprocessing, synthetic demo data."""
