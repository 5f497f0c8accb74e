"""Retrieval: clean the query, search (hybrid, and keywords for rewordings), fuse the result lists, rank documents."""
