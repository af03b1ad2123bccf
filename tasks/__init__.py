"""Thin Ray wrappers around ``pipeline``: build Ray objects from config, call pipeline, write."""
