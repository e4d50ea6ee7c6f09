"""A public quantum randomness beacon publishing NIST Randomness Beacon 2.0 pulses."""

__version__ = "0.1.0"
