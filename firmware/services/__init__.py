"""Honeypot services of the device runtime: one module per service, all on one small base.

``python3 -m firmware.services NAME`` runs one of them (see ``__main__``); each runs as its own
process and user so that a flaw in one service exposes nothing of the others.
"""
