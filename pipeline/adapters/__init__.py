"""Adapters: the only code that talks to the network, the database, mail and files."""
