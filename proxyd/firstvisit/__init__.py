"""firstvisit"""
