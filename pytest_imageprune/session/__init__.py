"""One session's life on an engine, without pytest: start, finish, and what to say."""
