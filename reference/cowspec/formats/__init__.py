"""The JSON trace formats over the three levels: decoding and encoding only.

``trace`` is ``cowspec-trace/1`` (spec chapter 10, docs/formats/trace-format.md),
``store_trace`` is ``cowspec-store-trace/1`` (docs/formats/store-trace-format.md),
and ``oracle`` answers a trace with the model. The meaning of a step lives in
the level it belongs to; a format only turns documents into values and back.
"""
