"""Pruning images as the daemon's ImagesPrune does: select, settle, delete, count."""
