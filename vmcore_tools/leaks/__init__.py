"""Layer 7, the leak analyses: candidates, orphans and their suspects, the
evidence read from a page, the verdict, reachability and one page explained.
"""
