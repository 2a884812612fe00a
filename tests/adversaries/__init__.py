"""Dishonest peers for the trust tests: the real daemon, speaking the real protocol over
real libp2p, with one behaviour changed. ``python -m tests.adversaries ROLE serve ...``."""
