"""The pure core: data in, data out. No I/O libraries, no clock, no environment."""
