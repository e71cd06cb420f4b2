"""The voice studio: a web page and JSON API to make, hear and manage voices (docs/studio.md).

Off unless the server is started with ``--http-port``. ``StudioServer(StudioContext(...))``
is all the wiring needs; the handlers reach the rest of the server only through the
Synthesizer, the VoiceStore's public methods, the default-voice preferences, the Wyoming
transcriber and the tuning jobs (``voice tune`` in a child process).
"""
