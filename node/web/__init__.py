"""Kith's browser client: a local web page served beside the node (``kith web``).

protocol.py is the contract between the server and the page; app.py the routes and
their guard; state.py the token, sessions and verified marks; bridge.py the link to
the node; sockets.py one page's WebSocket; uploads.py files; serve.py Hypercorn.
"""
