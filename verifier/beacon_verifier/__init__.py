"""Independent verifier for NIST Randomness Beacon 2.0 format pulses.

Depends on ``cryptography`` alone; it never imports the beacon service, qiskit,
numpy or jinja2, so a third party can audit a beacon with nothing else.
"""

__version__ = "0.1.0"
