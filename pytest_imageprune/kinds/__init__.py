"""The rest of what a session leaves: stopped containers, networks, volumes, build cache.

``table`` holds every fact about each kind; adding a kind touches this package alone.
"""
