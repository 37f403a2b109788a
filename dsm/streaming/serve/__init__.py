"""Serving over websockets and HTTP in Kyutai's protocol: the server, the one seam to a model
(service), the engine adapter and scripted test doubles, stream options, and clients."""
