"""The HTTP edge: everything that takes a Request or builds a Response."""
