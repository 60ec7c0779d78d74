"""The package version (read by setup.py without importing pvt_mm)."""
__version__ = '0.1.0'
