"""qasid: a self-hosted news digest and alert pipeline about Pakistan and US-Pakistan relations."""

__version__ = "0.1.0"
