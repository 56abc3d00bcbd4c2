"""qasid: a self-hosted news digest and alert pipeline about Pakistan and US-Pakistan relations."""

from pipeline.native import use_sources_if_needed

__version__ = "0.1.0"

# "compiled" (mypyc's C extensions of the hot modules), or "python (why)": pipeline/native.py
NATIVE_MODE = use_sources_if_needed()
