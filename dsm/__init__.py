"""dsm: a streaming speech toolkit built on Delayed Streams Modeling."""

__version__ = "0.1.0"
